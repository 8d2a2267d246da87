"""``workbench deploy`` through typer's CliRunner and as real, concurrent processes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from tests.deploy.conftest import MODES
from tests.deploy.test_deployment import colors
from workbench.cli import app

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from workbench.deploy.manager import DeploymentManager

pytestmark = pytest.mark.nginx


@pytest.fixture
def env(home: Path, stub_command: list[str], stub_repo: Path,
        make_manager: Callable[..., DeploymentManager]) -> dict[str, str]:
    """Environment of a CLI that keeps its state in ``home`` and serves with the stub."""
    return {
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_REPO": str(stub_repo),
        "WORKBENCH_SERVE_COMMAND": shlex.join(stub_command),
        "WB_STUB_MODES": json.dumps(MODES),
        "COLUMNS": "200",
    }


def run(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["deploy", *args], env=env)
    if result.exit_code != code:
        raise AssertionError(
            f"deploy {' '.join(args)} exited {result.exit_code}:\n{result.output}\n"
            f"{result.exception!r}"
        )
    return result.output


def test_cli_walks_a_rollout(nginx: None, env: dict[str, str]) -> None:
    out = run(env, "create", "web", "--model", "stub", "--version", "stable")
    assert "1.0.0 live on blue at http://127.0.0.1:" in out
    status = json.loads(run(env, "status", "web", "--json"))
    assert status["phase"] == "stable" and status["healthy"]
    url = status["url"]

    out = run(env, "update", "web", "--version", "1.1.0")
    assert "agreement of 1.1.0 (candidate) with 1.0.0 (stable): passed (>= 85.0%)" in out
    assert "100.0%" in out and "workbench deploy promote web" in out
    run(env, "weight", "web", "30")
    status = json.loads(run(env, "status", "web", "--json"))
    assert status["phase"] == "canary" and status["weights"] == {"blue": 70, "green": 30}
    assert len(colors(url, 30)) == 2

    run(env, "promote", "web")
    assert colors(url, 5) == {"green:1.1.0": 5}
    out = run(env, "status", "web")
    assert "promoted" in out and "green" in out and "100%" in out
    run(env, "rollback", "web", "--reason", "because")
    assert colors(url, 5) == {"blue:1.0.0": 5}

    history = json.loads(run(env, "history", "web", "--json"))
    assert [h["action"] for h in history] == [
        "create", "update", "agreement", "verify", "weight", "promote", "rollback"
    ]
    assert history[-1]["reason"] == "because"
    out = run(env, "history", "web")
    assert "rollback" in out and "because" in out

    watched = run(env, "status", "--watch", "--count", "2", "--interval", "0.1", "--json")
    assert watched.count('"name": "web"') == 2
    run(env, "delete", "web", "--yes")
    assert "no deployments" in run(env, "status")


def test_cli_errors_are_sentences_with_exit_codes(nginx: None, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "deploy", "promote", "nope"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 9
    assert "no deployment named 'nope'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "web", "--model", "stub", "--port", "70000"],
         "port must be an integer in 1..65535, not 70000"),
        (["create", "web", "--model", "stub", "--host", "999.1.1.1"],
         "invalid host '999.1.1.1': use an IP address or a host name"),
        (["create", "Bad Name", "--model", "stub"], "invalid deployment name 'Bad Name'"),
        (["promote", "bad name"], "invalid deployment name 'bad name'"),
        (["rollback", "bad name"], "invalid deployment name 'bad name'"),
    ],
)
def test_user_mistakes_are_one_sentence_and_leave_nothing(
    env: dict[str, str], home: Path, args: list[str], message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "deploy", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert len(proc.stderr.strip().splitlines()) <= 3  # one sentence, wrapped at most
    deployments = home / "deployments"
    assert not deployments.exists() or list(deployments.iterdir()) == []


def cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "deploy", *args],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{out}\n{err}"
    return out


def test_separate_processes_share_state_and_lose_no_update(
    nginx: None, env: dict[str, str], make_manager: Callable[..., DeploymentManager]
) -> None:
    # every step runs in its own process, which then exits: the state and the
    # instances outlive whoever started them
    finish(cli(env, "create", "web", "--model", "stub", "--version", "1.0.0"))
    finish(cli(env, "update", "web", "--version", "1.1.0"))
    before = make_manager().get("web").state.revision
    rounds = 2
    for i in range(rounds):
        both = [cli(env, "weight", "web", str(10 + i)), cli(env, "weight", "web", str(50 + i))]
        for proc in both:
            finish(proc)
    state = make_manager().get("web").state
    weights = [h for h in state.history if h.action == "weight"]
    assert len(weights) == 2 * rounds and all(h.outcome == "ok" for h in weights)
    assert len({h.actor for h in weights}) == 2 * rounds
    assert state.revision == before + 2 * rounds
    status = json.loads(finish(cli(env, "status", "web", "--json")))
    assert status["router_running"] and status["healthy"]
    assert all(i["running"] and i["ready"] for i in status["instances"])
    assert status["weights"]["green"] == state.rollout.weight


def test_two_concurrent_updates_one_wins_and_no_instance_is_orphaned(
    nginx: None, env: dict[str, str], make_manager: Callable[..., DeploymentManager]
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "1.0.0")
    both = [cli(env, "update", "web", "--version", "1.1.0"),
            cli(env, "update", "web", "--version", "1.2.0", "--min-agreement", "0")]
    results = [(p.wait(timeout=180), p.communicate()) for p in both]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 9], results
    loser = next(err for code, (_, err) in results if code == 9)
    assert "cannot update in phase" in loser
    manager = make_manager()
    state = manager.get("web").state
    assert state.rollout.phase.value == "verified"
    running = manager.backend("process").find("web")
    assert sorted((i.spec.color, i.spec.version) for i in running) == sorted(
        (c, r.version) for c, r in state.instances.items()
    )
    outcomes = [(h.action, h.outcome) for h in state.history if h.action == "update"]
    assert sorted(outcomes) == [("update", "ok"), ("update", "refused")]


CREATOR = """
import sys
from workbench.deploy.manager import DeploymentManager
web = DeploymentManager().create("web", "stub", "1.0.0")
web.update("1.1.0")
print(" ".join(r.ref for r in web.state.instances.values()), flush=True)
sys.stdin.readline()  # stay alive, as a notebook kernel does
"""


def test_a_deployment_made_elsewhere_is_deleted_quickly_and_leaves_no_zombie(
    nginx: None, env: dict[str, str]
) -> None:
    import time

    import psutil

    creator = subprocess.Popen(
        [sys.executable, "-c", CREATOR], env={**os.environ, **env}, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert creator.stdout is not None
        pids = [int(p) for p in creator.stdout.readline().split()]
        assert len(pids) == 2, creator.stderr.read() if creator.poll() is not None else pids
        for pid in pids:  # nobody's children: a kernel that exits or never waits harms nothing
            assert psutil.Process(pid).ppid() != creator.pid
        started = time.monotonic()
        finish(cli(env, "delete", "web", "--yes"))  # from another process
        took = time.monotonic() - started
        assert took < 10, f"delete took {took:.1f}s"
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        zombies = [c for c in psutil.Process(creator.pid).children()
                   if c.status() == psutil.STATUS_ZOMBIE]
        assert zombies == []
    finally:
        creator.kill()
        creator.wait(timeout=10)


def test_a_corrupt_state_is_recovered_by_restore_or_removed_by_delete_force(
    nginx: None, env: dict[str, str], home: Path
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "1.0.0")
    run(env, "restore", "web")  # a second write: the first state is kept beside it
    state_file = home / "deployments" / "web" / "state.json"
    assert (state_file.parent / "state.json.prev").is_file()
    state_file.write_text('{"name": "web", "trunc')
    proc = subprocess.run([sys.executable, "-m", "workbench", "deploy", "status", "web"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9 and "Traceback" not in proc.stderr
    assert "deploy restore web" in " ".join(proc.stderr.split())
    out = run(env, "restore", "web")
    assert "recovered the state" in " ".join(out.split())
    assert json.loads(run(env, "status", "web", "--json"))["healthy"]

    state_file.write_text("not json")
    (state_file.parent / "state.json.prev").write_text("not json either")
    refused = subprocess.run(  # without --force it refuses, in one sentence
        [sys.executable, "-m", "workbench", "deploy", "delete", "web", "--yes"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 9 and "--force" in refused.stderr
    url = "http://127.0.0.1:" + str(json.loads(
        (state_file.parent / "router" / "table.json").read_text())["listen_port"])
    run(env, "delete", "web", "--yes", "--force")
    assert not (home / "deployments" / "web").exists()
    from workbench.errors import ServingError

    with pytest.raises(ServingError, match="Connection refused"):
        colors(url, 1)  # the router is gone too
