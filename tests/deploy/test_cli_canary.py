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
