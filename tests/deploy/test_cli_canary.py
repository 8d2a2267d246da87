"""``workbench deploy update --strategy canary`` and the canary verbs through the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests._wait import wait_until
from tests.deploy.test_cli_deploy import env, run  # noqa: F401 - the env fixture

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.nginx


def test_a_bad_analysis_file_is_one_sentence_and_starts_nothing(
    nginx: None, env: dict[str, str], tmp_path: Path  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    bad = tmp_path / "analysis.toml"
    bad.write_text("[latency]\np95_ms = 100\n")
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "deploy", "update", "web", "--version", "1.1.0",
         "--strategy", "canary", "--analysis", str(bad)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "unknown key latency.p95_ms" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(run(env, "status", "web", "--json"))["phase"] == "stable"


def test_detached_canary_waits_at_a_gate_until_resume(
    nginx: None, env: dict[str, str]  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    assert json.loads(run(env, "status", "web", "--json"))["canary"] is None
    out = run(env, "update", "web", "--version", "1.1.0", "--strategy", "canary",
              "--steps", "gate,100", "--interval", "0.5s", "--detach")
    match = re.search(r"canary controller runs as pid (\d+)", out)
    assert match, out
    pid = int(match.group(1))
    wait_until(lambda: f"controller: pid {pid}, running" in run(env, "status", "web"), timeout=30)
    status = run(env, "status", "web")
    assert "canary gate" in status
    assert max(len(line) for line in status.splitlines()) <= 80, status
    canary = json.loads(run(env, "status", "web", "--json"))["canary"]
    assert canary["controller"] == {"pid": pid, "alive": True}
    assert canary["status"]["stage"] == "gate"
    out = run(env, "resume", "web")
    assert "canary promoted at 100%" in out
    state = json.loads(run(env, "status", "web", "--json"))
    assert state["phase"] == "promoted"
    wait_until(lambda: not json.loads(run(env, "status", "web", "--json"))["canary"][
        "controller"]["alive"], timeout=30)
    canary = json.loads(run(env, "status", "web", "--json"))["canary"]
    assert canary["controller"] == {"pid": pid, "alive": False}
    status = run(env, "status", "web")
    assert "carry on with" not in status and "controller" not in status  # the canary is done
    assert re.search(r"canary promoted at \d\d:\d\d:\d\d by cli", status), status
    history = run(env, "history", "web")
    assert "canary" in history


def _status(env: dict[str, str]) -> subprocess.CompletedProcess[str]:  # noqa: F811
    return subprocess.run([sys.executable, "-m", "workbench", "deploy", "status", "web", "--json"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_status_exits_1_while_a_canary_has_no_controller_or_is_paused(
    nginx: None, env: dict[str, str]  # noqa: F811
) -> None:
    import signal

    run(env, "create", "web", "--model", "stub", "--version", "stable")
    out = run(env, "update", "web", "--version", "1.1.0", "--strategy", "canary",
              "--steps", "gate,100", "--interval", "0.5s", "--detach")
    match = re.search(r"canary controller runs as pid (\d+)", out)
    assert match, out
    os.kill(int(match.group(1)), signal.SIGKILL)  # before (or while) it verifies the candidate
    wait_until(lambda: _status(env).returncode == 1, timeout=30)
    proc = _status(env)
    assert json.loads(proc.stdout)["canary"]["controller"]["alive"] is False
    said = ("web: the canary at 0% has no live controller, so nothing judges it; "
            "carry on with: workbench deploy restore web")
    assert proc.stderr.strip() == f"✗ {said}", proc.stderr
    assert json.loads(proc.stdout)["canary"]["problem"] == said

    out = run(env, "restore", "web")
    match = re.search(r"canary controller resumed as pid (\d+)", out)
    assert match, out
    pid = int(match.group(1))

    def at_the_gate() -> bool:
        proc = _status(env)
        status = json.loads(proc.stdout)["canary"]["status"] or {}
        return proc.returncode == 0 and status.get("stage") == "gate"

    wait_until(at_the_gate, timeout=60)
    run(env, "pause", "web", "--reason", "reading the logs")
    proc = _status(env)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("✗ web: the canary is paused at 0% ("), proc.stderr
    assert "reading the logs" in proc.stderr
    assert proc.stderr.rstrip().endswith("; go on with: workbench deploy resume web")
    assert json.loads(proc.stdout)["canary"]["controller"] == {"pid": pid, "alive": True}
    os.kill(pid, signal.SIGKILL)


def _bad_file(tmp_path: Path, kind: str) -> Path:
    import numpy as np

    path = tmp_path / f"{kind}.npz"
    if kind == "missing":
        return path
    if kind == "text":
        path.write_text("not an archive\n")
    elif kind == "truncated":
        np.savez(path, x=np.zeros((4, 64), np.float32), labels=np.zeros(4, np.int64))
        path.write_bytes(path.read_bytes()[:60])
    elif kind == "no-labels":
        np.savez(path, x=np.zeros((4, 64), np.float32))
    elif kind == "other-inputs":
        np.savez(path, image=np.zeros((4, 64), np.float32), labels=np.zeros(4, np.int64))
    return path


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "no-labels", "other-inputs"])
def test_a_bad_labelled_set_is_one_sentence_before_any_traffic(
    nginx: None, env: dict[str, str], tmp_path: Path, kind: str, detach: bool  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    before = json.loads(run(env, "status", "web", "--json"))
    labelled = _bad_file(tmp_path, kind)
    analysis = tmp_path / "analysis.toml"
    analysis.write_text(f'labelled = "{labelled}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "deploy", "update", "web", "--version", "1.1.0",
         "--strategy", "canary", "--analysis", str(analysis), *(["--detach"] if detach else [])],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(labelled) in lines[0], lines
    assert "Traceback" not in proc.stderr
    after = json.loads(run(env, "status", "web", "--json"))
    assert after["revision"] == before["revision"] and after["phase"] == "stable"
    assert after["weights"] == before["weights"] and after["canary"] is None
    assert [i["color"] for i in after["instances"]] == ["blue"]


@pytest.mark.parametrize("kind", ["text", "truncated", "other-inputs"])
def test_a_bad_sample_file_is_one_sentence_before_anything_starts(
    nginx: None, env: dict[str, str], tmp_path: Path, kind: str  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    before = json.loads(run(env, "status", "web", "--json"))
    sample = _bad_file(tmp_path, kind)
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "deploy", "update", "web", "--version", "1.1.0",
         "--sample", str(sample)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(sample) in lines[0], lines
    after = json.loads(run(env, "status", "web", "--json"))
    assert after["revision"] == before["revision"] and after["phase"] == "stable"
