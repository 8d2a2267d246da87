"""The %paddle magics in a real InteractiveShell, over the demo repository."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError

from tests.extension._shell import run


def paddle(shell: Any, line: str) -> Any:
    return shell.run_line_magic("paddle", line)


def test_load_ext_twice_is_a_noop_and_unload_removes_the_magics(shell: Any) -> None:
    magics = shell.magics_manager.magics
    first = magics["line"]["paddle"]
    shell.run_line_magic("load_ext", "workbench_ext")
    import workbench_ext

    workbench_ext.load_ipython_extension(shell)  # a second direct call too
    assert magics["line"]["paddle"] is first
    assert "paddle" in magics["cell"]
    shell.run_line_magic("unload_ext", "workbench_ext")
    assert "paddle" not in magics["line"] and "paddle" not in magics["cell"]
    with pytest.raises(UsageError):
        shell.run_line_magic("paddle", "list")
    shell.run_line_magic("load_ext", "workbench_ext")
    assert "paddle" in magics["line"]


def test_help_is_argparse_style(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    doc = shell.magics_manager.magics["line"]["paddle"].__doc__
    assert "%paddle verb" in doc and "compare" in doc
    assert doc.startswith("Usage: %paddle verb") and "::" not in doc  # plain text, not reST
    assert paddle(shell, "load --help") is None
    out = capsys.readouterr().out
    assert "%paddle load" in out and "--memory-pool MB" in out and "--device" in out
    assert out.startswith("Usage: %paddle load") and "::" not in out
    paddle(shell, "deploy weight --help")
    assert "%paddle deploy weight" in capsys.readouterr().out
    paddle(shell, "")
    out = capsys.readouterr().out
    assert "compare" in out and "deploy" in out


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "unknown verb 'frobnicate'"),
        ("load", "required"),
        ("load digits:9.9.9", "no version or alias '9.9.9'"),
        ("load nosuchmodel:1.0.0", "no model 'nosuchmodel'"),
        ("compare --batch-size many", "invalid int value"),
        ("compare digits --data not_defined_anywhere", "not_defined_anywhere"),
        ("deploy frob", "unknown verb 'frob'"),
        ("deploy status nosuch", "nosuch"),
        ("list 'unclosed", "cannot parse"),
    ],
)
def test_mistakes_are_usage_errors_with_a_sentence(shell: Any, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        paddle(shell, line)


def test_a_usage_error_in_a_cell_shows_one_line(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = shell.run_cell("%paddle load digits:9.9.9", store_history=False)
    assert isinstance(result.error_in_exec, UsageError)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "UsageError: digits has no version or alias '9.9.9'" in text
    assert "Traceback" not in text


def test_list_models_and_versions(shell: Any) -> None:
    models = paddle(shell, "list")
    assert list(models.index) == ["digits", "resnet"]
    versions = paddle(shell, "list digits")
    assert list(versions.index) == ["1.0.0", "1.1.0", "1.2.0"]
    assert versions.loc["1.0.0", "aliases"] == "stable"
    assert "canary" in versions.loc["1.1.0", "aliases"]
    assert versions.loc["1.1.0", "accuracy"] > versions.loc["1.2.0", "accuracy"]
    repo = paddle(shell, "repo")
    html = shell.display_formatter.format(repo)[0]["text/html"]
    assert "digits" in html and "stable" in html


def test_load_predict_use_rollback(shell: Any, session: Any) -> None:
    loaded = paddle(shell, "load digits@stable digits:1.1.0 -q")
    assert [str(lv.version) for lv in loaded] == ["1.0.0", "1.1.0"]
    hub = session.hubs["digits"]
    assert str(hub.active.version) == "1.0.0"

    prediction = run(shell, "p = %paddle predict --input x_test[:5]\np")
    assert str(prediction.version) == "1.0.0"
    (probs,) = prediction.outputs.values()
    assert probs.shape == (5, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert shell.user_ns["p"] is prediction
    formatted = shell.display_formatter.format(prediction)[0]
    assert "Prediction from <b>1.0.0</b>" in formatted["text/html"]
    assert "top-1" in formatted["text/plain"]

    # a cell's last expression is the input; a single row becomes a batch of one
    cell = run(shell, "%%paddle predict digits:1.1.0\nrow = x_test[7]\nrow")
    assert str(cell.version) == "1.1.0"
    assert next(iter(cell.outputs.values())).shape == (1, 10)

    assert str(paddle(shell, "use 1.1.0").version) == "1.1.0"
    assert str(hub.active.version) == "1.1.0"
    assert str(paddle(shell, "predict --input x_test[:2]").version) == "1.1.0"
    assert str(paddle(shell, "rollback").version) == "1.0.0"
    assert str(hub.active.version) == "1.0.0"
    with pytest.raises(UsageError, match="not loaded"):
        paddle(shell, "use 1.2.0")
    with pytest.raises(UsageError, match="is active"):
        paddle(shell, "unload 1.0.0")

    table = paddle(shell, "list --loaded")
    assert list(table.index) == ["1.0.0", "1.1.0"]
    assert bool(table.loc["1.0.0", "active"]) and table.loc["1.0.0", "device"] == "cpu"
    assert table.loc["1.0.0", "served"] >= 1


def test_compare_returns_a_comparison(shell: Any, session: Any) -> None:
    run(shell, "r = %paddle compare digits:1.0.0 1.1.0 1.2.0 --data x_test --labels y_test -q")
    result = shell.user_ns["r"]
    assert result.versions == ["1.0.0", "1.1.0", "1.2.0"]  # 1.2.0 was loaded for the comparison
    assert result.rows == 120
    assert result.accuracy["1.1.0"] > result.accuracy["1.2.0"]
    top1 = result.agreement.set_index(["a", "b"])["top1_agreement"]
    assert top1[("1.0.0", "1.1.0")] > top1[("1.0.0", "1.2.0")]
    assert len(result.disagreements()) > 0
    assert "1.2.0" in {str(lv.version) for lv in session.hubs["digits"].loaded}
    assert str(session.hubs["digits"].active.version) == "1.0.0"  # loading for a comparison never switches
    # the cell form: its expression is the data; default versions = every loaded one
    cell = run(shell, "%%paddle compare -q\nx_test[:16]")
    assert cell.rows == 16 and len(cell.versions) == 3


def test_bench_and_unload(shell: Any, session: Any) -> None:
    paddle(shell, "load digits@stable digits:1.1.0 digits:1.2.0 --no-activate -q")  # no-op when loaded
    result = paddle(shell, "bench 1.0.0 1.1.0 --requests 12 --batch-size 4 --concurrency 2 -q")
    table = result.table
    assert list(table.index) == ["1.0.0", "1.1.0"]
    assert (table["requests"] == 12).all() and (table["errors"] == 0).all()
    assert (table["p99_ms"] >= table["p50_ms"]).all()
    # again: Paddle fails on predictors run from short-lived threads; the bench's threads live on
    again = paddle(shell, "bench digits:1.0.0 --requests 12 --batch-size 4 --concurrency 3 -q").table
    assert (again["errors"] == 0).all()
    assert paddle(shell, "unload 1.2.0") == ["digits:1.2.0"]
    assert [str(lv.version) for lv in session.hubs["digits"].loaded] == ["1.0.0", "1.1.0"]


def test_use_acts_on_the_named_model_and_never_switches_the_current_one(
    shell: Any, session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    digits = session.hubs["digits"]
    assert str(digits.active.version) == "1.0.0"
    paddle(shell, "load resnet:1.0.0 -q")
    assert session.default_model == "resnet"
    capsys.readouterr()
    try:
        assert str(paddle(shell, "use digits:1.1.0").version) == "1.1.0"
        assert str(digits.active.version) == "1.1.0"
        assert session.default_model == "resnet"  # still the current model
        out = capsys.readouterr().out
        assert "digits: 1.1.0 is active (was 1.0.0); the current model stays resnet" in out
        paddle(shell, "use 1.0.0")  # a bare version is the current model's, and it says so
        assert "resnet: 1.0.0 is active" in capsys.readouterr().out
        assert str(digits.active.version) == "1.1.0"
        with pytest.raises(UsageError, match="resnet is the current model"):
            paddle(shell, "use 1.2.0")
        paddle(shell, "use digits:1.0.0   # a comment ends the line, as in Python")
    finally:
        paddle(shell, "unload --all --model resnet")
        session.default_model = "digits"
    assert str(digits.active.version) == "1.0.0"


def test_repo_switches_the_session(shell: Any, session: Any, demo_repo: Any, tmp_path: Any) -> None:
    other = tmp_path / "repo"
    shutil.copytree(demo_repo / "digits", other / "digits")
    assert session.deployments.repo == demo_repo
    try:
        repo = paddle(shell, f"repo {other}")
        assert repo.root == other
        assert session.hubs == {}  # the old repository's versions were freed
        assert session.deployments.repo == other  # `%paddle deploy create` serves from it
        assert list(paddle(shell, "list").index) == ["digits"]
        # a single-model repository needs no model name
        assert str(paddle(shell, "load stable -q").version) == "1.0.0"
    finally:
        paddle(shell, f"repo {demo_repo}")
    assert session.hubs == {} and session.deployments.repo == demo_repo


def test_panel_verb_returns_a_displayable_panel(shell: Any) -> None:
    panel = paddle(shell, "panel versions digits")
    try:
        bundle = shell.display_formatter.format(panel)[0]
        assert "application/vnd.jupyter.widget-view+json" in bundle
    finally:
        panel.close()
    with pytest.raises(UsageError, match="invalid choice"):
        paddle(shell, "panel nope")


def test_deploy_verbs_without_deployments(shell: Any) -> None:
    assert len(paddle(shell, "deploy list")) == 0
    assert len(paddle(shell, "deploy status")) == 0
    with pytest.raises(UsageError, match="which deployment"):
        paddle(shell, "panel deploy")


@pytest.mark.slow
def test_serve_starts_workbench_serve_beside_the_kernel(shell: Any, session: Any) -> None:
    served = paddle(shell, "serve digits@canary")
    try:
        assert served.running and served.url.startswith("http://127.0.0.1:")
        assert "serving <b>digits</b> 1.1.0" in shell.display_formatter.format(served)[0]["text/html"]
        with served.client() as client:
            answer = client.infer("digits", {"x": shell.user_ns["x_test"][:3]})
        assert answer.version == "1.1.0"
        assert paddle(shell, "serve --list") == [served]
    finally:
        stopped = paddle(shell, "serve --stop all")
    assert stopped == [served] and not served.running
    assert session.servers == {}
    with pytest.raises(UsageError, match="nothing served on port 1"):
        paddle(shell, "serve --stop 1")
