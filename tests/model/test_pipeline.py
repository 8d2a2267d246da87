"""Pipeline versions: published, signed and verified like a model, pinning their stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench import ModelRepository
from workbench.cli import app
from workbench.errors import IntegrityError, ManifestError, PublishError, SignatureError
from workbench.model.manifest import MANIFEST_NAME, sha256_file
from workbench.model.signing import generate_keypair

runner = CliRunner()


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    generate_keypair(private, public)
    return private, public


def test_pipeline_is_published_signed_and_verified_with_its_stages(repo_copy: Path, tmp_path: Path) -> None:
    private, public = _keys(tmp_path)
    repo = ModelRepository(repo_copy)
    for version in ("1.0.0", "1.1.0"):
        repo.sign("digits", version, private)
    manifest = repo.publish_pipeline(
        "ocr", "1.0.0", {"rec": "digits@canary", "det": "digits:1.0.0"}, signing_key=private, aliases=["stable"]
    )
    assert [(s.role, s.ref) for s in manifest.stages] == [("det", "digits:1.0.0"), ("rec", "digits:1.1.0")]
    det = manifest.stage("det")
    assert det is not None
    assert det.manifest_sha256 == sha256_file(repo.path("digits", "1.0.0") / MANIFEST_NAME)
    assert det.task == "generic"
    assert repo.kind("ocr", "stable") == "pipeline" and repo.kind("digits", "1.0.0") == "model"
    assert repo.pipeline("ocr", "1.0.0") == manifest
    assert sorted(p.name for p in repo.path("ocr", "1.0.0").iterdir()) == ["model.sig", MANIFEST_NAME]
    assert repo.verify_pipeline("ocr", "1.0.0", public_key=public) == manifest
    with pytest.raises(ManifestError, match="ocr:1.0.0 is a pipeline, not a model"):
        repo.manifest("ocr", "1.0.0")

    # a stage changed after the pipeline was published: its pin no longer matches
    stage_manifest = repo.path("digits", "1.1.0") / MANIFEST_NAME
    data = json.loads(stage_manifest.read_text())
    data["runtime"] = {"onednn": False}
    stage_manifest.write_text(json.dumps(data))
    repo.sign("digits", "1.1.0", private)  # even re-signed by the same key
    with pytest.raises(IntegrityError, match="rec stage digits:1.1.0 has changed since the pipeline was published"):
        repo.verify_pipeline("ocr", "1.0.0", public_key=public)

    # the pipeline's own manifest tampered: its signature fails
    pipeline_manifest = repo.path("ocr", "1.0.0") / MANIFEST_NAME
    data = json.loads(pipeline_manifest.read_text())
    data["stages"][0]["version"] = "1.2.0"
    pipeline_manifest.write_text(json.dumps(data))
    with pytest.raises(SignatureError, match=MANIFEST_NAME):
        repo.verify_pipeline("ocr", "1.0.0", public_key=public)


def test_bad_pipelines_are_refused_and_leave_nothing(repo_copy: Path) -> None:
    repo = ModelRepository(repo_copy)
    with pytest.raises(PublishError, match="needs a rec stage"):
        repo.publish_pipeline("ocr", "1.0.0", {"det": "digits:1.0.0"})
    with pytest.raises(PublishError, match="unknown pipeline role 'layout'"):
        repo.publish_pipeline("ocr", "1.0.0", {"det": "digits:1.0.0", "rec": "digits:1.1.0", "layout": "digits"})
    with pytest.raises(LookupError, match="no version or alias"):
        repo.publish_pipeline("ocr", "1.0.0", {"det": "digits:9.9.9", "rec": "digits:1.1.0"})
    repo.publish_pipeline("ocr", "1.0.0", {"det": "digits:1.0.0", "rec": "digits:1.1.0"})
    with pytest.raises(PublishError, match="is a pipeline, not a model"):
        repo.publish_pipeline("ocr2", "1.0.0", {"det": "ocr:1.0.0", "rec": "digits:1.1.0"})
    assert repo.models() == ["digits", "ocr"]
    repo.delete("digits", "1.1.0")
    with pytest.raises(IntegrityError, match="rec stage digits:1.1.0 is gone"):
        repo.verify_pipeline("ocr", "1.0.0")


def test_pipeline_cli_publish_list_show_verify(repo_copy: Path) -> None:
    repo = ["--repo", str(repo_copy)]
    result = runner.invoke(app, ["models", "publish-pipeline", "ocr:1.0.0", *repo,
                                 "--stage", "det=digits:1.0.0", "--stage", "cls=digits:1.2.0",
                                 "--stage", "rec=digits@canary"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "published pipeline ocr:1.0.0 (det digits:1.0.0, cls digits:1.2.0, rec digits:1.1.0)" in result.output
    result = runner.invoke(app, ["models", "list", *repo, "--json"])
    rows = {(r["model"], r["version"]): r for r in json.loads(result.output)}
    assert rows["ocr", "1.0.0"]["format"] == "pipeline" and rows["ocr", "1.0.0"]["problem"] is None
    assert rows["ocr", "1.0.0"]["kind"] == "pipeline" and rows["digits", "1.0.0"]["kind"] == "model"
    assert rows["ocr", "1.0.0"]["stages"] == {"det": "digits:1.0.0", "cls": "digits:1.2.0", "rec": "digits:1.1.0"}
    result = runner.invoke(app, ["models", "list", *repo], env={"COLUMNS": "200"})
    assert "det digits:1.0.0 → cls digits:1.2.0 → rec digits:1.1.0" in result.output
    result = runner.invoke(app, ["models", "show", "ocr:1.0.0", *repo])
    assert "cls: digits:1.2.0 (generic)" in result.output
    result = runner.invoke(app, ["models", "verify", "all", *repo])
    assert result.exit_code == 0, result.output
    assert "✓ ocr:1.0.0" in result.output
