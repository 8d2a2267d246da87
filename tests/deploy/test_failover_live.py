"""A stable instance's worker killed under load: the router moves its traffic to the other
colour meanwhile, with zero failed client requests (real deployment, real Paddle, real nginx).

Both colours run ``workbench serve`` in process isolation (one worker process per
version) through the process backend. The candidate is verified and kept in the router
without a share, as during a rollout before the first canary step.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest

from tests._wait import wait_until
from tests.deploy._load import Load
from tests.serving.conftest import metric_value
from workbench.deploy.rollout.phases import Phase

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.nginx, pytest.mark.slow]



def worker_pids(instance_pid: int) -> list[int]:
    """The Paddle worker processes of a ``workbench serve`` instance (its children)."""
    children = psutil.Process(instance_pid).children(recursive=True)
    return [c.pid for c in children if "workbench.runtime.worker" in " ".join(c.cmdline())]


def ready(url: str) -> int:
    return httpx.get(f"{url}/v2/health/ready", timeout=5).status_code


def test_kill_9_of_the_stable_worker_moves_traffic_to_the_other_colour(
    nginx: None, demo_repo: Path, home: Path
) -> None:
    from workbench.deploy.manager import DeploymentManager

    manager = DeploymentManager(home, repo=demo_repo)
    web = manager.create("failover", "digits", "1.0.0", timeout=300)
    try:
        state = web.update("1.1.0", timeout=300)
        assert state.rollout.phase is Phase.VERIFIED and state.rollout.stable == "blue"
        blue, green = state.instances["blue"], state.instances["green"]
        table = manager.router("failover").table
        assert table is not None and table.colors == ("blue", "green") and table.green_weight == 0
        [worker] = worker_pids(int(blue.ref))
        assert worker_pids(int(green.ref))  # green serves in its own worker process too

        with Load(web.url) as load:
            wait_until(lambda: len(load.since(0)) >= 20, 60, 0.05, what="load through the router")
            assert {c for _, _, c in load.since(0)} == {"blue"}  # all on stable so far
            killed = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            # the instance says it is not ready while its worker is down ...
            wait_until(lambda: ready(blue.url) == 503, 15, 0.05,
                       what="blue's readiness to drop while its worker is down")
            # ... meanwhile the router answers from green ...
            wait_until(lambda: any(c == "green" for _, _, c in load.since(killed)), 30, 0.05,
                       what="answers from green while blue's worker is down")
            # ... and blue comes back once its worker restarted
            wait_until(lambda: ready(blue.url) == 200, 180, 0.2, what="blue's worker to restart")
            recovered = time.monotonic()
            assert worker_pids(int(blue.ref)) != [worker]
            # passive health lets blue back in after fail_timeout: traffic returns to stable
            back = table.fail_timeout + 30

            def back_on_blue() -> bool:
                recent = load.since(recovered)[-20:]
                return len(recent) == 20 and {c for _, _, c in recent} == {"blue"}

            wait_until(back_on_blue, back, 0.2, what="traffic back on blue")

        assert not load.errors, load.errors[:5]  # zero failed client requests
        during = Counter(c for t, _, c in load.since(killed) if t < recovered)
        assert during["green"] > 0, during
        statuses = Counter(s for _, s, _ in load.answers)
        assert statuses == {200: len(load.answers)}
        print(f"kill -9 under load: {len(load.answers)} requests, 0 failed; while blue was "
              f"down {dict(during)}; back on blue {time.monotonic() - recovered:.1f}s after "
              "its worker restarted")
        # the instance itself recorded the death and the restart
        metrics = httpx.get(f"{blue.url}/metrics", timeout=5).text
        assert metric_value(metrics, "workbench_worker_restarts_total", version="1.0.0") == 1
    finally:
        manager.delete("failover")
