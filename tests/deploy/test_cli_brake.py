"""The emergency brake: ``workbench rollback NAME`` pulls the router's brake (all traffic to
stable, no reload) before typer, rich or anything else the switch does not need is
imported; other command lines go to typer."""

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


#: a rollback's process, noting the modules loaded when it pulls the brake (creates the
#: brake file) and at each SIGHUP (a router reload); with FAIL_APPLY, every router apply fails
_SIGNALS = f"""
import json, os, signal, sys
NOT_BEFORE = {sorted(NOT_BEFORE_THE_SWITCH)!r}
def loaded():
    return sorted(m for m in sys.modules if m.startswith("workbench") or m.split(".")[0] in NOT_BEFORE)
real_kill, real_open = os.kill, os.open
seen = {{"brakes": [], "hups": []}}
def kill(pid, sig):
    if sig == signal.SIGHUP:
        seen["hups"].append(loaded())
    return real_kill(pid, sig)
def open_(path, flags, *args, **kwargs):
    if "/brake." in str(path) and flags & os.O_CREAT:
        seen["brakes"].append(loaded())
    return real_open(path, flags, *args, **kwargs)
os.kill, os.open = kill, open_
if os.environ.get("FAIL_APPLY"):
    import workbench.deploy.nginx as nginx
    from workbench.errors import RouterError
    def apply(self, table):
        raise RouterError("nginx: [emerg] the check failed (injected)")
    nginx.NginxRouter.apply = apply
from workbench.cli import main
try:
    main(sys.argv[1:])
finally:
    print(json.dumps(seen), file=sys.stderr)
"""


def _promoted(env: dict[str, str], name: str) -> str:  # noqa: F811
    run(env, "create", name, "--model", "stub", "--version", "stable")
    run(env, "update", name, "--version", "1.1.0")
    run(env, "promote", name)
    url: str = json.loads(run(env, "status", name, "--json"))["url"]
    assert colors(url, 3) == {"green:1.1.0": 3}
    return url


def _roll_back(env: dict[str, str], name: str, *, fail: bool = False) -> dict[str, list[list[str]]]:  # noqa: F811
    """Modules loaded at the brake and at each SIGHUP of ``workbench rollback name --reason p99``."""
    extra = {"FAIL_APPLY": "1"} if fail else {}
    proc = subprocess.run([sys.executable, "-c", _SIGNALS, "rollback", name, "--reason", "p99"],
                          env={**os.environ, **env, **extra}, capture_output=True, text=True,
                          timeout=120)
    if fail:
        assert proc.returncode != 0 and "injected" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert f"{name}: rolled back to 1.0.0" in proc.stdout
    seen: dict[str, list[list[str]]] = json.loads(proc.stderr.strip().splitlines()[-1])
    return seen


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
        "brakes": sorted(p.name for p in _router(env, name).glob("brake.*")),
    }


def test_a_prepared_rollback_switches_before_the_deploy_layer_loads(
    nginx: None, env: dict[str, str]  # noqa: F811
) -> None:
    url = _promoted(env, "web")
    assert (_router(env, "web") / "rollback.json").exists()
    seen = _roll_back(env, "web")
    assert len(seen["brakes"]) == 1, seen  # the brake: all traffic to stable, no reload
    early = [m for m in seen["brakes"][0]
             if m.startswith("workbench.deploy") or ("." not in m and m != "workbench")]
    assert not early, early  # neither the deploy layer nor typer, rich...
    assert "workbench.cli._switch" in seen["brakes"][0]
    assert len(seen["hups"]) == 1, seen  # then the rollback's own reload
    assert "workbench.deploy.canary" in seen["hups"][0]
    assert colors(url, 5) == {"blue:1.0.0": 5}
    history = json.loads(run(env, "history", "web", "--json"))
    assert history[-1]["action"] == "rollback" and history[-1]["reason"] == "p99"
    assert history[-1]["by"] == "cli"
    # nothing to roll back to now, and no brake left behind
    assert not list(_router(env, "web").glob("*rollback*"))
    assert not list(_router(env, "web").glob("brake.*"))


def test_a_stale_prepared_rollback_is_not_used(nginx: None, env: dict[str, str]) -> None:  # noqa: F811
    url = _promoted(env, "web")
    router = _router(env, "web")
    prepared = json.loads((router / "rollback.json").read_text())
    prepared["state_revision"] -= 1  # made for an earlier state
    (router / "rollback.json").write_text(json.dumps(prepared))
    seen = _roll_back(env, "web")
    assert not seen["brakes"]
    assert seen["hups"] and "workbench.deploy.canary" in seen["hups"][0]  # the ordinary path switched
    assert colors(url, 5) == {"blue:1.0.0": 5}


def test_a_brake_for_another_configuration_is_not_pulled(nginx: None, env: dict[str, str]) -> None:  # noqa: F811
    url = _promoted(env, "web")
    router = _router(env, "web")
    prepared = json.loads((router / "rollback.json").read_text())
    prepared["router_revision"] = "0123456789ab"  # the router runs another configuration
    (router / "rollback.json").write_text(json.dumps(prepared))
    seen = _roll_back(env, "web")
    assert not seen["brakes"] and seen["hups"]
    assert colors(url, 5) == {"blue:1.0.0": 5}


def test_a_prepared_rollback_ends_as_the_ordinary_one(nginx: None, env: dict[str, str]) -> None:  # noqa: F811
    _promoted(env, "web")
    _promoted(env, "api")
    (_router(env, "api") / "rollback.json").unlink()  # api: the ordinary path
    assert _roll_back(env, "web")["brakes"]
    assert not _roll_back(env, "api")["brakes"]
    web, api = _outcome(env, "web"), _outcome(env, "api")
    assert web == api
    assert web["rollout"]["phase"] == "rolled_back" and web["upstreams"] == [("blue", "1.0.0")]


def test_a_rollback_failing_after_the_brake_says_so_and_that_stable_has_the_traffic(
    nginx: None, env: dict[str, str]  # noqa: F811
) -> None:
    url = _promoted(env, "web")
    seen = _roll_back(env, "web", fail=True)  # the rolled-back configuration cannot be installed
    assert seen["brakes"] and not seen["hups"]
    assert colors(url, 5) == {"blue:1.0.0": 5}  # the brake holds
    state = json.loads((_router(env, "web").parent / "state.json").read_text())
    assert state["rollout"]["phase"] == "rolled_back" and state["rollout"]["weight"] == 0
    assert sorted(state["instances"]) == ["blue", "green"]  # green runs on, without traffic
    last = json.loads(run(env, "history", "web", "--json"))[-1]
    assert (last["action"], last["outcome"]) == ("rollback", "failed")
    assert "injected" in last["reason"] and "green 1.1.0 still runs" in last["reason"]
    assert list(_router(env, "web").glob("brake.*"))  # kept: the router routes by it
    status = json.loads(run(env, "status", "web", "--json"))
    assert status["phase"] == "rolled_back"


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
