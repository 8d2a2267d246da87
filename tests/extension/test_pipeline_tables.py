"""``%paddle list`` tables name what a model is, and a pipeline's versions show their stages."""

from __future__ import annotations

from pathlib import Path

from workbench_ext import ops
from workbench_ext.state import Session

from workbench import ModelRepository


def test_lists_show_pipelines_with_their_stages(repo_copy: Path, tmp_path: Path) -> None:
    repo = ModelRepository(repo_copy)
    repo.publish_pipeline("ocr", "1.0.0", {"det": "digits:1.0.0", "rec": "digits:1.1.0"}, aliases=["stable"])
    repo.publish_pipeline("ocr", "2.0.0", {"det": "digits:1.1.0", "cls": "digits:1.0.0", "rec": "digits:1.2.0"})
    session = Session(repo_copy, device="cpu", home=tmp_path / "home")
    try:
        models = ops.models_table(session)
        assert models.loc["ocr", "kind"] == "pipeline" and models.loc["digits", "kind"] == "model"
        session.hub("ocr").load("2.0.0")  # a pipeline loads in the kernel like a model
        versions = ops.versions_table(session, "ocr")
        assert list(versions.index) == ["1.0.0", "2.0.0"]
        assert versions.loc["1.0.0", "stages"] == "det digits:1.0.0 → rec digits:1.1.0"
        assert versions.loc["2.0.0", "stages"] == "det digits:1.1.0 → cls digits:1.0.0 → rec digits:1.2.0"
        assert versions.loc["1.0.0", "aliases"] == "stable"
        assert versions.loc["2.0.0", "active"] and versions.loc["2.0.0", "loaded"] == "cpu"
        assert "stages" not in ops.versions_table(session, "digits").columns
    finally:
        session.close()
