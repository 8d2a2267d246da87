"""What a user reads after a rollout, through the CLI on real instances (the process backend,
stub serving instances) behind real nginx: roles not colours, one history entry per action
with who acted, no stale controller line, help texts with one default, a final newline
on piped output, and ``--detach`` returning before verification ends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from tests._wait import wait_until
from tests.deploy.test_cli_deploy import env, run  # noqa: F401 - the env fixture
from workbench.cli import app

pytestmark = pytest.mark.nginx


def roles(env: dict[str, str]) -> dict[str, tuple[str, str, str]]:  # noqa: F811
    """role -> (colour, version, traffic) as the status table shows them."""
    out = run(env, "status", "web")
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) >= 4 and cells[0] in ("blue", "green"):
            rows[cells[1]] = (cells[0], cells[2], cells[3])
    return rows


def history(env: dict[str, str]) -> list[dict[str, object]]:  # noqa: F811
    return json.loads(run(env, "history", "web", "--json"))


def cli_history_actions(env: dict[str, str]) -> list[str]:  # noqa: F811
    out = run(env, "history", "web")
    return [m.group(1) for m in re.finditer(r"^\d\d:\d\d:\d\d  (\S+) ", out, re.M)]


def test_roles_after_promote_and_after_rollback(nginx: None, env: dict[str, str]) -> None:  # noqa: F811
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    run(env, "update", "web", "--version", "1.1.0")
    out = run(env, "weight", "web", "5")
    assert "stable 1.0.0 (blue) 95%, candidate 1.1.0 (green) 5%" in out
    assert roles(env) == {"stable": ("blue", "1.0.0", "95%"), "candidate": ("green", "1.1.0", "5%")}
    assert "95/5" in run(env, "history", "web")  # stable/candidate, whichever colour each is

    out = run(env, "promote", "web")
    # the promoted version is the stable one now; the old one stays warm to roll back to
    assert "stable 1.1.0 (green) 100%, previous 1.0.0 (blue) 0%" in out
    assert roles(env) == {"stable": ("green", "1.1.0", "100%"), "previous": ("blue", "1.0.0", "0%")}
    status = json.loads(run(env, "status", "web", "--json"))
    assert status["roles"] == {"stable": {"color": "green", "version": "1.1.0", "weight": 100},
                               "previous": {"color": "blue", "version": "1.0.0", "weight": 0}}
    assert status["stable"] == "blue" and status["weights"] == {"blue": 0, "green": 100}  # as before

    # the next rollout starts from the promoted colour: green is stable, blue the candidate
    run(env, "update", "web", "--version", "1.2.0", "--min-agreement", "0")
    assert roles(env) == {"stable": ("green", "1.1.0", "100%"), "candidate": ("blue", "1.2.0", "0%")}
    run(env, "weight", "web", "5")
    assert roles(env)["candidate"] == ("blue", "1.2.0", "5%")
    assert re.search(r"weight .* 95/5 ", run(env, "history", "web").splitlines()[-2])
    out = run(env, "rollback", "web", "--reason", "too slow")
    assert "stable 1.1.0 (green) 100%" in out and "candidate" not in out.split("—")[-1]
    assert roles(env) == {"stable": ("green", "1.1.0", "100%")}
    entries = history(env)
    assert [e["action"] for e in entries] == cli_history_actions(env)  # same order, same entries
    assert entries[-1]["action"] == "rollback" and entries[-1]["by"] == "cli"
    assert entries[-1]["stable_color"] == "green"


def test_a_canary_reads_as_one_entry_per_action_and_ends_without_a_controller_line(
    nginx: None, env: dict[str, str]  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    out = run(env, "update", "web", "--version", "1.1.0", "--strategy", "canary",
              "--steps", "gate,100", "--interval", "0.5s", "--detach")
    pid = int(re.search(r"runs as pid (\d+)", out).group(1))  # type: ignore[union-attr]
    wait_until(lambda: "canary gate" in run(env, "status", "web"), timeout=60)
    status = run(env, "status", "web")
    assert re.search(r"web  stub  verified step 1/2 ", status), status
    assert f"controller: pid {pid}, running" in status
    run(env, "resume", "web")  # past the gate: promoted
    wait_until(lambda: not json.loads(run(env, "status", "web", "--json"))["canary"][
        "controller"]["alive"], timeout=30)
    status = run(env, "status", "web")
    assert "controller" not in status and "carry on" not in status and "step" not in status
    assert re.search(r"canary promoted at \d\d:\d\d:\d\d by cli", status), status
    assert roles(env) == {"stable": ("green", "1.1.0", "100%"), "previous": ("blue", "1.0.0", "0%")}

    entries = history(env)
    actions = [e["action"] for e in entries]
    assert actions == ["create", "update", "agreement", "verify", "gate", "promote"]
    assert actions == cli_history_actions(env)
    by = {e["action"]: e["by"] for e in entries}
    # the controller verified (detached) and started the canary; the user's resume promoted
    assert by["verify"] == "controller" and by["gate"] == "controller" and by["promote"] == "cli"
    assert entries[-1]["details"]["canary"] == "promote"
    verify = entries[3]
    assert verify["reason"] == "all checks passed; the canary starts"
    text = run(env, "history", "web")
    assert "waiting for promote" not in text and "by controller: canary started" in text

    # a second canary, rolled back by hand at its gate: said so, with who, once
    run(env, "update", "web", "--version", "1.2.0", "--strategy", "canary", "--steps",
        "gate,100", "--interval", "0.5s", "--detach", "--min-agreement", "0")
    wait_until(lambda: "canary gate" in run(env, "status", "web"), timeout=60)
    out = run(env, "rollback", "web")
    assert out.strip() == "web: canary rolled back at 0% — rolled back by hand"
    wait_until(lambda: not json.loads(run(env, "status", "web", "--json"))["canary"][
        "controller"]["alive"], timeout=30)
    status = run(env, "status", "web")
    assert re.search(r"canary rolled back at \d\d:\d\d:\d\d by cli", status), status
    assert "controller" not in status
    assert roles(env) == {"stable": ("green", "1.1.0", "100%")}
    finished = json.loads(run(env, "status", "web", "--json"))["canary"]["finished"]
    assert finished["stage"] == "rolled_back" and finished["by"] == "cli"
    assert finished["rule"] is None
    entries = history(env)
    assert [e["action"] for e in entries][-2:] == ["gate", "rollback"]
    assert sum(e["action"] == "rollback" for e in entries) == 1


def test_detach_returns_before_verification_ends(nginx: None, env: dict[str, str]) -> None:  # noqa: F811
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    slow = {**env, "WB_STUB_DELAY": "6"}  # each new instance takes 6 s to answer
    began = time.monotonic()
    out = run(slow, "update", "web", "--version", "1.1.0", "--strategy", "canary",
              "--steps", "gate,100", "--interval", "0.5s", "--detach")
    took = time.monotonic() - began
    state = json.loads(run(env, "status", "web", "--json"))
    assert state["phase"] in ("starting", "verifying"), state["message"]
    assert took < 6, took
    assert "canary controller runs as pid" in out
    wait_until(lambda: "canary gate" in run(env, "status", "web"), timeout=90)
    verify = next(e for e in history(env) if e["action"] == "verify")
    assert verify["outcome"] == "ok" and verify["by"] == "controller"
    run(env, "abort", "web")


def test_piped_canary_output_ends_with_a_newline(nginx: None, env: dict[str, str]) -> None:  # noqa: F811
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "deploy", "update", "web", "--version", "1.1.0",
         "--strategy", "canary", "--steps", "100", "--interval", "0.5s"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n"), repr(proc.stdout[-80:])
    assert "all checks passed; the canary starts" in proc.stdout
    assert "waiting for promote" not in proc.stdout
    assert re.search(r"\d\d:\d\d:\d\d canary promote: canary started; promoted", proc.stdout)


def test_help_texts_give_one_default_each() -> None:
    group = typer.main.get_command(app)
    deploy = group.commands["deploy"]  # type: ignore[attr-defined]
    for name in deploy.commands:  # type: ignore[attr-defined]
        result = CliRunner().invoke(app, ["deploy", name, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        for option in re.split(r"\s(?=--[a-z])", text):
            assert option.count("[default") <= 1, (name, option)
    text = " ".join(CliRunner().invoke(app, ["deploy", "create", "--help"],
                                       env={"COLUMNS": "200"}).output.split())
    assert "Ready instances a colour needs [default: all of them]." in text
    assert "[default: all of them]. [default: 0]" not in text


def test_a_canary_rolled_back_by_a_rule_says_which_and_when(
    nginx: None, env: dict[str, str]  # noqa: F811
) -> None:
    """1.2.0 answers with a different top-1 than 1.0.0: the agreement rule fails on the
    first tick (replaying stable's manifest sample) and the controller rolls back."""
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "deploy", "update", "web", "--version", "1.2.0",
         "--min-agreement", "0", "--strategy", "canary", "--steps", "50,100",
         "--interval", "1s"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.endswith("\n")
    assert "fail → rollback" in proc.stdout and "(sustained)" not in proc.stdout
    status = run(env, "status", "web")
    assert re.search(r"canary rolled back at \d\d:\d\d:\d\d by rule agreement: rule agreement "
                     r"failed", " ".join(status.split())), status
    assert "controller" not in status
    assert roles(env) == {"stable": ("blue", "1.0.0", "100%")}
    entries = history(env)
    assert [e["action"] for e in entries][-3:] == ["verify", "weight", "rollback"]
    rollback = entries[-1]
    assert rollback["by"] == "controller" and rollback["outcome"] == "failed"
    assert any(r["rule"] == "agreement" and r["verdict"] == "fail"
               for r in rollback["details"]["results"])  # type: ignore[index]
    assert "agreement fail → rollback" in " ".join(run(env, "history", "web").split())
