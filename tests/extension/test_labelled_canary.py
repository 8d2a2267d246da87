"""``%paddle deploy update … --strategy canary --labelled PATH`` in a real InteractiveShell:
the labelled set reaches the canary's analysis spec, and a bad one is one sentence before
the candidate starts — as ``workbench deploy update --labelled`` does.

The serving instances are the deploy tests' stub (no Paddle model loads); the router is
real nginx. Model ``stub`` has plain versions; ``pages`` is an OCR-shaped pipeline of
stub stages, so its labelled set is a directory of images and ``texts.json``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from IPython.core.error import UsageError

from tests._components import require
from tests._wait import wait_until
from tests.deploy.conftest import MODES, STUB_MODEL, STUB_SERVER, nginx_available, stub_sample
from tests.deploy.test_pages import labelled_set

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.nginx
PIPELINE = "pages"


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A shell with ``workbench_ext`` over a stub repository, deploying with the stub server."""
    require("nginx", nginx_available(), "install nginx (e.g. apt-get install nginx-light)")
    from IPython.core.interactiveshell import InteractiveShell

    from workbench.model.manifest import TensorSpec
    from workbench.model.repository import ModelRepository

    root = tmp_path_factory.mktemp("labelled-repo")
    files = tmp_path_factory.mktemp("labelled-files")
    (files / "inference.json").write_text("{}", encoding="utf-8")
    (files / "inference.pdiparams").write_bytes(b"\0" * 16)
    repo = ModelRepository(root)
    for version in ("1.0.0", "1.1.0"):
        repo.publish(STUB_MODEL, version, files, sample={"x": stub_sample(64)},
                     inputs=[TensorSpec("x", "float32", (-1, 64))],
                     outputs=[TensorSpec("probabilities", "float32", (-1, 10))],
                     aliases=("stable",) if version == "1.0.0" else ())
    for version in ("1.0.0", "1.1.0"):
        repo.publish_pipeline(PIPELINE, version, {"det": f"{STUB_MODEL}:1.0.0",
                                                  "rec": f"{STUB_MODEL}:{version}"})
    server = tmp_path_factory.mktemp("stub") / "stub_serve.py"
    server.write_text(STUB_SERVER, encoding="utf-8")
    import sys

    home = Path(tempfile.mkdtemp(prefix="wb-lab-", dir="/tmp"))  # short: the router's socket
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_REPO", str(root))
        mp.setenv("WORKBENCH_HOME", str(home))
        mp.setenv("WORKBENCH_SERVE_COMMAND", shlex.join([sys.executable, str(server)]))
        mp.setenv("WB_STUB_MODES", json.dumps(MODES))
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "workbench_ext")
        try:
            yield ip
        finally:
            import workbench_ext

            manager = workbench_ext.get_session(ip).deployments
            for name in manager.names():
                manager.delete(name)
            ip.run_line_magic("unload_ext", "workbench_ext")
            shutil.rmtree(home, ignore_errors=True)


def paddle(shell: Any, line: str) -> Any:
    return shell.run_line_magic("paddle", line)


def deployment(shell: Any, name: str, ref: str) -> Any:
    """``name`` serving ``ref`` on blue (created once per module)."""
    import workbench_ext

    manager = workbench_ext.get_session(shell).deployments
    if name not in manager.names():
        paddle(shell, f"deploy create {name} {ref} -q")
    return manager.get(name)


def untouched(revision: int, web: Any) -> None:
    """No candidate started, no weight moved, no canary, nothing recorded."""
    state = web.state
    assert state.revision == revision and state.phase == "stable"
    assert state.weights == {"blue": 100} and sorted(state.instances) == ["blue"]
    assert state.canary is None


def _bad_pages(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    if kind == "missing":
        return folder
    if kind == "no-texts":
        return labelled_set(folder)
    if kind == "unnamed-image":
        return labelled_set(folder, {"a.png": ["Hello"], "gone.png": ["World"]})
    if kind == "not-an-image":
        labelled_set(folder, {"a.png": ["Hello"], "notes.txt": ["World"]})
        (folder / "notes.txt").write_text("World\n")
        return folder
    if kind == "bad-json":
        return labelled_set(folder, "{not json")
    assert kind == "npz"
    path = tmp_path / "pages.npz"
    np.savez(path, x=stub_sample(4), labels=np.zeros(4, np.int64))
    return path


@pytest.mark.parametrize("kind", ["missing", "no-texts", "unnamed-image", "not-an-image",
                                  "bad-json", "npz"])
def test_a_bad_labelled_ocr_set_is_one_sentence_and_moves_no_traffic(
    shell: Any, tmp_path: Path, kind: str
) -> None:
    web = deployment(shell, "ocr", f"{PIPELINE}:1.0.0")
    revision = web.state.revision
    bad = _bad_pages(tmp_path, kind)
    with pytest.raises(UsageError) as caught:
        paddle(shell, f"deploy update ocr 1.1.0 --strategy canary --steps 100 --labelled {bad} -q")
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and str(bad) in message, message
    untouched(revision, web)


def test_labelled_belongs_to_a_canary_and_a_directory_to_a_pipeline(
    shell: Any, tmp_path: Path
) -> None:
    pages = labelled_set(tmp_path / "pages", {"a.png": ["Hello"], "b.png": ["World"]})
    web = deployment(shell, "ocr", f"{PIPELINE}:1.0.0")
    revision = web.state.revision
    with pytest.raises(UsageError, match=r"^--labelled is judged by a canary's accuracy rule: "
                                         r"add --strategy canary$"):
        paddle(shell, f"deploy update ocr 1.1.0 --labelled {pages} -q")
    untouched(revision, web)
    web = deployment(shell, "web", f"{STUB_MODEL}@stable")
    revision = web.state.revision
    with pytest.raises(UsageError, match="is a directory of images: that is for an OCR pipeline"):
        paddle(shell, f"deploy update web 1.1.0 --strategy canary --labelled {pages} -q")
    untouched(revision, web)


def test_the_labelled_set_reaches_the_canary_spec_and_its_accuracy_rule(
    shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path relative to the kernel's directory is made absolute (the canary thread, a
    detached controller or a restore may read it from elsewhere) and judged every interval."""
    x = stub_sample(40, seed=3)
    np.savez(tmp_path / "held-out.npz", x=x, labels=np.argmax(x[:, :10], axis=1))
    monkeypatch.chdir(tmp_path)
    web = deployment(shell, "judged", f"{STUB_MODEL}@stable")
    run = paddle(shell, "deploy update judged 1.1.0 --strategy canary --steps 50,100 "
                        "--interval 0.5s --labelled held-out.npz -q")
    try:
        expected = str(tmp_path.resolve() / "held-out.npz")
        assert run.spec.labelled == expected
        persisted = wait_until(lambda: web.state.canary, 30, what="the canary's persisted spec")
        assert persisted.spec["labelled"] == expected  # what `deploy status` and a restore read

        def judged() -> bool:
            last = {r.rule: r for r in (run.status.last if run.status else ())}
            return "accuracy" in last and last["accuracy"].verdict != "skip"

        wait_until(judged, 60, what="the accuracy rule judging the labelled set")
        accuracy = next(r for r in run.status.last if r.rule == "accuracy")
        assert accuracy.verdict == "pass" and "accuracy 100.0% vs stable 100.0%" in accuracy.message
        assert "judged against" in run.view.value and expected in run.view.value
    finally:
        run.stop()
        run.wait(30)


def test_a_canary_judged_per_segment_starts_its_candidate_counting_segments(
    shell: Any, tmp_path: Path
) -> None:
    """``%paddle deploy update --strategy canary`` with a rule judged per segment against a
    threshold starts the candidate with ``--segment-by``, as ``workbench deploy update``
    does (stable need not count for it): without it the candidate has no per-segment
    figures, and the rule never judges a segment."""
    web = deployment(shell, "tenants", f"{STUB_MODEL}@stable")
    assert not any("--segment-by" in r.args for r in web.state.records(web.state.rollout.stable))
    analysis = tmp_path / "tenants.toml"
    analysis.write_text('steps = [50, 100]\ninterval = "30s"\nsegment_by = "header:x-tenant"\n'
                        "relative_latency = false\nmemory = false\nagreement = false\n"
                        "accuracy = false\n")
    run = paddle(shell, f"deploy update tenants 1.1.0 --strategy canary --analysis {analysis} -q")
    try:
        candidate = web.state.rollout.candidate
        args = [list(r.args) for r in web.state.records(candidate)]
        assert args and all("--segment-by" in a and a[a.index("--segment-by") + 1] == "header:x-tenant"
                            for a in args), args
    finally:
        run.stop()
        run.wait(30)
