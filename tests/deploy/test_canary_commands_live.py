"""Commands during a canary, with real nginx, real instances (the stub) and a detached
controller: each ``deploy promote`` is one step however many arrive at once, and ``abort``
moves all traffic to stable itself while the controller runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests._wait import wait_until
from tests.deploy.test_cli_deploy import env, run  # noqa: F401 - the env fixture

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from workbench.deploy.manager import DeploymentManager

pytestmark = pytest.mark.nginx
STEPS = "5,10,20,50,100"


def canary(env: dict[str, str]) -> dict[str, object]:  # noqa: F811
    status = json.loads(run(env, "status", "web", "--json"))
    assert isinstance(status, dict)
    return status


def start(env: dict[str, str]) -> int:  # noqa: F811
    """A deployment whose detached controller stands at the first step (5%); its pid.

    The interval is long: nothing but the commands moves the canary during the test."""
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    run(env, "update", "web", "--version", "1.1.0", "--strategy", "canary", "--steps", STEPS,
        "--interval", "10m", "--detach")

    def stepped() -> bool:
        c = canary(env)["canary"]
        return isinstance(c, dict) and bool(c["status"]) and c["status"]["stage"] == "step"

    wait_until(stepped, timeout=60)
    status = canary(env)
    assert status["canary"]["controller"]["alive"]  # type: ignore[index]
    assert status["weights"][status["roles"]["candidate"]["color"]] == 5  # type: ignore[index]
    return int(status["canary"]["controller"]["pid"])  # type: ignore[index]


def test_two_concurrent_promotes_take_two_steps(nginx: None, env: dict[str, str]) -> None:  # noqa: F811
    start(env)
    command = [sys.executable, "-m", "workbench", "deploy", "promote", "web"]
    procs = [subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    said = sorted(out for out, _ in outs)
    assert all(p.returncode == 0 for p in procs), outs
    # each printed its own step: 10% then 20% (which came first is not fixed)
    assert "step 2/5: 10%" in said[0] + said[1] and "step 3/5: 20%" in said[0] + said[1], said
    status = canary(env)
    candidate = status["roles"]["candidate"]["color"]  # type: ignore[index]
    assert status["weights"][candidate] == 20  # type: ignore[index]
    assert status["canary"]["status"]["index"] == 2  # type: ignore[index]
    entries = json.loads(run(env, "history", "web", "--json"))
    skips = [e for e in entries if e.get("details", {}).get("canary") == "advance" and e["by"] == "cli"]
    assert [e["details"]["weight"] for e in skips] == [10, 20]
    # the router says so too: one in five requests (sticky per user id) on the candidate
    with httpx.Client(base_url=status["url"], timeout=5) as client:  # type: ignore[arg-type]
        versions = [client.post("/v2/models/stub/infer", json=_body(),
                                headers={"x-user-id": f"u{i}"}).headers["x-model-version"]
                    for i in range(200)]
    assert 15 <= versions.count("1.1.0") <= 70, versions.count("1.1.0")


def test_abort_moves_all_traffic_to_stable_while_the_controller_runs(
    nginx: None, env: dict[str, str], make_manager: Callable[..., DeploymentManager]  # noqa: F811
) -> None:
    from workbench.deploy import canary as canaries

    pid = start(env)
    web = make_manager().get("web")
    began = time.monotonic()
    steered = canaries.steer(web, "abort")
    took = time.monotonic() - began
    assert steered.canary is not None and steered.canary.stage.value == "aborted"
    assert steered.state.phase == "rolled_back" and steered.state.candidate is None
    assert took < 1.0, f"abort took {took:.2f}s"
    with httpx.Client(base_url=web.url, timeout=5) as client:
        versions = {client.post("/v2/models/stub/infer", json=_body(),
                                headers={"x-user-id": f"u{i}"}).headers["x-model-version"]
                    for i in range(50)}
    assert versions == {"1.0.0"}
    # the controller was told: it sees the canary ended and exits
    wait_until(lambda: not canary(env)["canary"]["controller"]["alive"], timeout=30)  # type: ignore[index]
    assert canary(env)["canary"]["controller"]["pid"] == pid  # type: ignore[index]
    assert canary(env)["canary"]["finished"]["stage"] == "aborted"  # type: ignore[index]
    # and outside a canary, the same call is the deployment's own
    with pytest.raises(Exception, match="abort"):
        canaries.steer(web, "abort")


def _body() -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def test_the_notebook_panel_s_buttons_steer_the_canary_too(
    nginx: None, env: dict[str, str], stub_repo: Path, home: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deploy panel's Promote during a canary skips one step (it used to promote the
    candidate outright behind the controller's back); its Abort ends the canary."""
    pytest.importorskip("ipywidgets")
    from workbench_ext.panels.deploy import DeployPanel
    from workbench_ext.state import Session

    from workbench.deploy import canary as canaries
    from workbench.deploy.rollout.analysis import AnalysisSpec

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    session = Session(stub_repo, device="cpu", home=home)
    web = session.deployments.create("web", "stub", "stable")
    web.update("1.1.0")
    canaries.remember(web, AnalysisSpec(steps=(5, 10, 100), interval=600.0))
    canaries.controller(web).begin()  # the canary stands at 5%, judged by nobody meanwhile
    panel = DeployPanel(session, "web", interval=0.5, live=False)
    try:
        panel.buttons["promote"].click()
        panel.wait(60)
        assert panel.error is None, panel.error
        state = session.deployments.get("web").state
        assert state.canary is not None and state.canary.status is not None
        assert (state.canary.status.weight, state.phase) == (10, "canary")
        assert state.weights[state.rollout.candidate] == 10
        panel.buttons["abort"].click()
        panel.wait(60)
        state = session.deployments.get("web").state
        assert state.canary is not None and state.canary.status is not None
        assert state.canary.status.stage.value == "aborted"
        assert state.weights == {state.rollout.stable: 100}
    finally:
        panel.close()
