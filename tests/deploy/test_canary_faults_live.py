"""Canaries whose metrics sources or hooks misbehave, with real nginx, real ``workbench
serve`` instances and real client traffic.

- A /metrics source answering garbage, one hanging, and an unreachable Prometheus: the
  rules are inconclusive with the reason, the canary pauses saying why, and is never
  promoted; the controller does not end on the error.
- A hook server trickling one byte every 2 s and a hook command hanging with a
  ``sleep 600`` child: the failing candidate is still rolled back on time, and no child
  of the hook outlives its deadline.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest

from tests.deploy._nginx import free_port
from tests.deploy._trickle import TrickleServer, wait_gone
from tests.deploy.test_canary_live import FAULTY, Clients, manager, spec, updated  # noqa: F401
from workbench.deploy import canary
from workbench.deploy.rollout.analysis import ErrorRateRule, LatencyRule
from workbench.deploy.rollout.controller import Stage
from workbench.deploy.rollout.phases import Phase
from workbench.deploy.rollout.scrape import ScrapeSource

if TYPE_CHECKING:
    from pathlib import Path

    from workbench.deploy.manager import DeploymentManager

pytestmark = [pytest.mark.nginx, pytest.mark.slow]


@pytest.mark.parametrize("fault", ["garbage", "hanging"])
def test_a_broken_metrics_scrape_pauses_the_canary_saying_why(
    manager: DeploymentManager, fault: str  # noqa: F811
) -> None:
    web = updated(manager, "1.1.0")
    state = web.state
    stable, candidate = state.rollout.stable, state.rollout.candidate
    broken = (TrickleServer(garbage=b"<html>not metrics</html>") if fault == "garbage"
              else TrickleServer(every=2.0))
    plan = spec(interval=1.5, max_failures=4, max_inconclusive=50)
    control = canary.controller(web, plan)
    control.source = ScrapeSource({stable: [state.instances[stable].url],
                                   candidate: [broken.url]}, timeout=1.0)
    stop = threading.Event()
    # a paused canary keeps its controller (a resume from another shell goes on): stop it
    control.listeners.append(lambda status, action: stop.set() if action.kind == "pause" else None)
    try:
        with Clients(web.url) as clients:
            control.begin()
            began = time.monotonic()
            runner = threading.Thread(target=lambda: control.run(stop), daemon=True)
            runner.start()
            runner.join(60)
            took = time.monotonic() - began
    finally:
        stop.set()
        broken.close()
    status = control.status
    assert status is not None and status.stage is Stage.PAUSED, status
    assert status.message.startswith("paused after 4 failed reads in a row (metrics: ")
    why = "ValueError" if fault == "garbage" else "within 1 s"
    assert why in status.message
    assert took < 20  # 4 looks of at most ~1 s each (the hanging scrape is cut at 1 s)
    failing = [r for r in status.last if r.rule in ("error_rate", "latency_p99")]
    assert failing and all(r.verdict == "inconclusive" and why in r.message for r in failing)
    assert web.phase is Phase.CANARY and web.state.weights[candidate] == 25  # never promoted
    assert clients.failed == 0
    history = [h for h in web.history() if "canary" in h.details]  # one entry per action
    assert history[-1].action == "pause" and history[-1].details["canary"] == "pause"


def test_an_unreachable_prometheus_pauses_the_canary_saying_why(
    manager: DeploymentManager,  # noqa: F811
) -> None:
    web = updated(manager, "1.1.0")
    nowhere = f"http://127.0.0.1:{free_port()}"
    stop = threading.Event()
    with Clients(web.url) as clients:
        status = canary.run(web, spec(interval=1.5, max_failures=4), prometheus=nowhere,
                            stop=stop,
                            on_tick=lambda s, action: stop.set() if action.kind == "pause" else None)
    assert status.stage is Stage.PAUSED, status.message
    assert status.message.startswith("paused after 4 failed reads in a row (metrics: ")
    assert f"Prometheus at {nowhere}" in status.message
    assert web.phase is Phase.CANARY and clients.failed == 0


def test_a_failing_candidate_is_rolled_back_on_time_past_hanging_hooks(
    manager: DeploymentManager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path  # noqa: F811
) -> None:
    monkeypatch.setenv("WB_TEST_FAULTS", "--fault-error-rate 1")
    web = updated(manager, FAULTY, checks=("ready",))
    trickle = TrickleServer(every=2.0)
    pids = tmp_path / "hook-children"
    hooks = (trickle.url + "/events", f"sleep 600 & echo $! >> {pids}; wait")
    marks: dict[str, float] = {}

    def mark(status: object, action: object) -> None:
        marks.setdefault(getattr(action, "kind", ""), time.monotonic())

    rules = (ErrorRateRule(min_requests=5), LatencyRule(min_requests=10))
    try:
        with Clients(web.url) as clients:
            status = canary.run(web, spec(rules=rules, hooks=hooks, hook_timeout=1.0),
                                on_tick=mark)
            returned = time.monotonic()
    finally:
        trickle.close()
    assert status.stage is Phase.ROLLED_BACK, status.message
    assert status.message.startswith("rule error_rate failed: 100.0%")
    # decided within a few looks of the first weight, though every hook hangs (then the
    # router reload and the candidate's drain and stop)
    decided = status.updated - status.since
    assert decided < 3.0, f"rollback decided {decided:.1f} s after the first weight"
    assert marks["rollback"] - marks["advance"] < decided + 8.0
    assert clients.failed == 0 and web.phase is Phase.ROLLED_BACK
    # run() gave the deliveries one last deadline, then returned
    assert returned - marks["rollback"] < 1.0 + 1.0 + 1.0
    # advance and rollback, each tried 3 times: every attempt's child killed at 1 s
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and len(pids.read_text().split()) < 6:
        time.sleep(0.2)
    children = [int(pid) for pid in pids.read_text().split()]
    assert len(children) == 6
    assert all(wait_gone(pid, 5.0) for pid in children), "a hook child outlived its deadline"
