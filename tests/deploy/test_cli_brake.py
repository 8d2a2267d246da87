"""The emergency brake: ``workbench rollback NAME`` switches the router before typer, rich
or anything else the switch does not need is imported; other command lines go to typer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.test_cli_deploy import env, run  # noqa: F401 - the stub CLI's env fixture
from tests.deploy.test_deployment import colors
from workbench.cli.brake import parse

#: what the switch must not wait for (psutil it needs: it checks the nginx masters)
NOT_BEFORE_THE_SWITCH = {"typer", "rich", "click", "pydantic", "numpy", "httpx", "prometheus_client"}

_PROBE = """
import json, sys
import workbench.deploy.nginx as nginx
real = nginx.NginxRouter.apply
loaded = []
def apply(self, table):
    loaded.append(sorted({m.split('.')[0] for m in sys.modules}))
    return real(self, table)
nginx.NginxRouter.apply = apply
from workbench.cli import main
try:
    main(sys.argv[1:])
finally:
    print(json.dumps(loaded), file=sys.stderr)
"""


#: a rollback's process, noting at each SIGHUP (the router's switch) the modules loaded
_SIGNALS = f"""
import json, os, signal, sys
NOT_BEFORE = {sorted(NOT_BEFORE_THE_SWITCH)!r}
real = os.kill
hups = []
def kill(pid, sig):
    if sig == signal.SIGHUP:
        hups.append(sorted(m for m in sys.modules if m.startswith("workbench")
                           or m.split(".")[0] in NOT_BEFORE))
    return real(pid, sig)
os.kill = kill
from workbench.cli import main
try:
    main(sys.argv[1:])
finally:
    print(json.dumps(hups), file=sys.stderr)
"""


def _promoted(env: dict[str, str], name: str) -> str:  # noqa: F811
    run(env, "create", name, "--model", "stub", "--version", "stable")
    run(env, "update", name, "--version", "1.1.0")
    run(env, "promote", name)
    url: str = json.loads(run(env, "status", name, "--json"))["url"]
    assert colors(url, 3) == {"green:1.1.0": 3}
    return url


def _roll_back(env: dict[str, str], name: str) -> list[list[str]]:  # noqa: F811
    """Modules loaded at each SIGHUP of ``workbench rollback name --reason p99``."""
    proc = subprocess.run([sys.executable, "-c", _SIGNALS, "rollback", name, "--reason", "p99"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{name}: rolled back to 1.0.0" in proc.stdout
    hups: list[list[str]] = json.loads(proc.stderr.strip().splitlines()[-1])
    return hups


def _router(env: dict[str, str], name: str) -> Path:  # noqa: F811
    return Path(env["WORKBENCH_HOME"]) / "deployments" / name / "router"


def _outcome(env: dict[str, str], name: str) -> dict[str, object]:  # noqa: F811
    state = json.loads((_router(env, name).parent / "state.json").read_text())
    history = json.loads(run(env, "history", name, "--json"))
    table = json.loads((_router(env, name) / "table.json").read_text())
    return {
        "rollout": {k: v for k, v in state["rollout"].items() if k != "since"},
        "revision": state["revision"], "instances": sorted(state["instances"]),
        "history": [{k: v for k, v in h.items() if k not in {"time", "actor"}} for h in history],
        "table": {k: v for k, v in table.items() if k not in {"deployment", "listen_port", "upstreams"}},
        "upstreams": [(u["color"], u["version"]) for u in table["upstreams"]],
        "prepared": sorted(p.name for p in _router(env, name).glob("*rollback*")),
    }


def test_a_prepared_rollback_switches_before_the_deploy_layer_loads(
    nginx: None, env: dict[str, str]  # noqa: F811
) -> None:
    url = _promoted(env, "web")
    assert (_router(env, "web") / "rollback.json").exists()
    hups = _roll_back(env, "web")
    assert len(hups) == 2, hups  # the brake's switch, then the rollback's own (same table)
    early = [m for m in hups[0] if m.startswith("workbench.deploy") or ("." not in m and m != "workbench")]
    assert not early, early  # neither the deploy layer nor typer, rich...
    assert "workbench.cli._switch" in hups[0] and "workbench.deploy.canary" in hups[1]
    assert colors(url, 5) == {"blue:1.0.0": 5}
    history = json.loads(run(env, "history", "web", "--json"))
    assert history[-1]["action"] == "rollback" and history[-1]["reason"] == "p99"
    assert history[-1]["by"] == "cli"
    assert not list(_router(env, "web").glob("*rollback*"))  # nothing to roll back to now


def test_a_stale_prepared_rollback_is_not_used(nginx: None, env: dict[str, str]) -> None:  # noqa: F811
    url = _promoted(env, "web")
    router = _router(env, "web")
    prepared = json.loads((router / "rollback.json").read_text())
    # made for an earlier state, and routing to the candidate: installing it would be wrong
    (router / "nginx.conf.rollback").write_text((router / "nginx.conf").read_text())
    prepared["state_revision"] -= 1
    (router / "rollback.json").write_text(json.dumps(prepared))
    hups = _roll_back(env, "web")
    assert hups and "workbench.deploy.canary" in hups[0]  # the ordinary path switched
    assert colors(url, 5) == {"blue:1.0.0": 5}


def test_a_prepared_rollback_ends_as_the_ordinary_one(nginx: None, env: dict[str, str]) -> None:  # noqa: F811
    _promoted(env, "web")
    _promoted(env, "api")
    (_router(env, "api") / "rollback.json").unlink()  # api: the ordinary path
    assert "workbench.deploy.canary" not in _roll_back(env, "web")[0]
    assert "workbench.deploy.canary" in _roll_back(env, "api")[0]
    web, api = _outcome(env, "web"), _outcome(env, "api")
    assert web == api
    assert web["rollout"]["phase"] == "rolled_back" and web["upstreams"] == [("blue", "1.0.0")]


@pytest.mark.parametrize(("argv", "parsed"), [
    (["rollback", "web"], ("rollback", "web", "", False)),
    (["deploy", "rollback", "web", "--reason", "bad p99", "--json"],
     ("rollback", "web", "bad p99", True)),
    (["abort", "--reason=oops", "web"], ("abort", "web", "oops", False)),
    (["rollback", "web", "--help"], None),
    (["rollback", "--help"], None),
    (["rollback"], None),
    (["rollback", "web", "other"], None),
    (["rollback", "web", "--force"], None),
    (["promote", "web"], None),
    (["deploy", "status"], None),
    ([], None),
])
def test_only_a_plain_rollback_or_abort_is_taken_before_typer(
    argv: list[str], parsed: tuple[str, str, str, bool] | None
) -> None:
    assert parse(argv) == parsed


def test_a_rollback_switches_the_router_before_typer_loads(
    nginx: None, env: dict[str, str]  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    run(env, "update", "web", "--version", "1.1.0")
    run(env, "promote", "web")
    url = json.loads(run(env, "status", "web", "--json"))["url"]
    assert colors(url, 5) == {"green:1.1.0": 5}
    proc = subprocess.run([sys.executable, "-c", _PROBE, "rollback", "web", "--reason", "p99"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "web: rolled back to 1.0.0" in proc.stdout
    applies = json.loads(proc.stderr.strip().splitlines()[-1])
    assert len(applies) == 1, applies  # one switch
    early = set(applies[0]) & NOT_BEFORE_THE_SWITCH
    assert not early, early
    assert colors(url, 5) == {"blue:1.0.0": 5}
    history = json.loads(run(env, "history", "web", "--json"))
    assert history[-1]["action"] == "rollback" and history[-1]["reason"] == "p99"
    assert history[-1]["by"] == "cli"
    # --help and mistakes are typer's, as before
    proc = subprocess.run([sys.executable, "-m", "workbench", "rollback", "--help"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "All traffic back to stable" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "workbench", "deploy", "rollback", "web", "--force"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "No such option: --force" in proc.stderr
