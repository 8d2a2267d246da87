"""Process isolation with real Paddle models in worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import psutil
import pytest

from tests._wait import wait_until
from tests.runtime._swap import swap_under_load
from workbench import ModelLoadError, ModelRepository, VersionHub, compare
from workbench.errors import WorkerDiedError
from workbench.model.demo import digits_dataset

if TYPE_CHECKING:
    from pathlib import Path

    from workbench.runtime.hub import HubEvent

OUTPUT = "probabilities"


@pytest.fixture(scope="module")
def hub(demo_repo: Path) -> VersionHub:
    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu", isolation="process")
    hub.load("1.0.0")
    hub.load("1.1.0")
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return digits_dataset()[2][:16]


def test_front_never_imports_paddle_and_unload_frees_the_worker(demo_repo: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, psutil
        from workbench import ModelRepository, VersionHub
        from workbench.model.demo import digits_dataset
        hub = VersionHub(ModelRepository({str(demo_repo)!r}), "digits", device="auto", isolation="process")
        hub.load("1.0.0")
        loaded = hub.load("1.1.0")
        pids = loaded.worker_pids
        assert loaded.memory.scope == "worker" and loaded.memory.rss_bytes > 20 * 2**20, loaded.memory
        assert hub.predict({{"x": digits_dataset()[2][:4]}}).outputs["probabilities"].shape == (4, 10)
        hub.unload("1.1.0")
        assert not any(psutil.pid_exists(pid) for pid in pids), pids
        hub.close()
        leaked = sorted(m for m in sys.modules if m == "paddle" or m.startswith("paddle."))
        assert not leaked, leaked
        print("ok")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_swap_under_load_every_answer_from_exactly_one_version(hub: VersionHub, rows: np.ndarray) -> None:
    first, second = (lv.predict({"x": rows})[OUTPUT] for lv in hub.loaded)
    assert not np.allclose(first, second)
    hub.use("1.0.0")
    run = swap_under_load(hub, rows, ["1.1.0", "1.0.0", "1.1.0", "1.0.0"], threads=6, pause=0.3,
                          max_requests=100_000)
    assert run.failures == []
    assert run.mismatched == []
    assert set(run.served) == {"1.0.0", "1.1.0"}


def test_use_primes_the_worker_through_shared_memory_before_the_switch(hub: VersionHub) -> None:
    hub.use("1.0.0")
    target = hub.get("1.1.0")
    served, before = target.stats()["served"], target.primed
    primed_when_active: list[int] = []
    unsubscribe = hub.subscribe(
        lambda event: primed_when_active.append(target.primed) if event.kind == "activated" else None
    )
    hub.use("1.1.0")
    unsubscribe()
    assert primed_when_active and primed_when_active[0] > before  # round trips to the worker
    assert target.stats()["served"] == served
    hub.use("1.0.0")


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_batches_sent_from_an_event_loop_are_stacked_in_place_and_never_cross(
    hub: VersionHub, rows: np.ndarray, loop_kind: str
) -> None:
    """The serving loop's path: parts written into shared memory, the reply read on the loop.

    A cancelled batch still owns its worker until its reply is read, so the next batch
    never receives the cancelled one's outputs; and the worker's channel works for
    callers from other threads afterwards (uvloop leaves a watched descriptor non-blocking).
    """
    import uvloop

    loaded = hub.get("1.0.0")
    restarts = loaded.stats()["worker_restarts"]
    expected = loaded.predict({"x": rows})[OUTPUT]

    async def main() -> None:
        future = loaded.start_predict([{"x": rows[:3]}, {"x": rows[3:7]}, {"x": rows[7:]}])
        assert future is not None
        assert loaded.start_predict([{"x": rows}]) is None  # its one worker is busy
        np.testing.assert_allclose((await future)[OUTPUT], expected, atol=1e-6)
        for _ in range(20):
            cancelled = loaded.start_predict([{"x": rows[8:]}])
            assert cancelled is not None
            cancelled.cancel()
            while (future := loaded.start_predict([{"x": rows[:4]}])) is None:
                await asyncio.sleep(0.001)
            np.testing.assert_allclose((await future)[OUTPUT], expected[:4], atol=1e-6)

    served = loaded.stats()["served"]
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert loaded.stats()["served"] == served + 41
    assert loaded.inflight == 0
    for _ in range(5):  # from this thread now, through the same worker
        np.testing.assert_allclose(loaded.predict({"x": rows})[OUTPUT], expected, atol=1e-6)
    assert loaded.stats()["worker_restarts"] == restarts


def test_kill_9_fails_only_in_flight_and_the_worker_comes_back(hub: VersionHub, rows: np.ndarray) -> None:
    hub.use("1.0.0")
    loaded = hub.get("1.0.0")
    events: list[HubEvent] = []
    unsubscribe = hub.subscribe(events.append)
    failures: list[BaseException] = []
    ok = Counter[str]()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                ok[str(hub.predict({"x": rows}).version)] += 1
            except WorkerDiedError as exc:
                failures.append(exc)
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    victim = loaded.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: loaded.state.value == "down", 10, what="the version to go down")
    assert loaded.stats()["worker_restarts"] == 1
    wait_until(lambda: loaded.state.value == "ready", 90, what="the worker to restart")
    stop.set()
    for thread in threads:
        thread.join(30)
    unsubscribe()
    assert all("digits:1.0.0" in str(exc) for exc in failures), failures
    assert failures, "the requests running on the killed worker fail"
    assert [e.kind for e in events if e.kind.startswith("worker")] == ["worker_died", "worker_restarted"]
    assert not psutil.pid_exists(victim)
    assert loaded.worker_pids[0] != victim
    assert hub.predict({"x": rows}).outputs[OUTPUT].shape == (16, 10)
    # requests that started after the worker was back all succeeded
    assert ok["1.0.0"] > 0


def test_a_version_paddle_cannot_load_leaves_the_active_one_serving(
    repo_copy: Path, rows: np.ndarray
) -> None:
    params = repo_copy / "digits" / "1.1.0" / "inference.pdiparams"
    params.write_bytes(b"not paddle parameters" * 10)
    hub = VersionHub(ModelRepository(repo_copy), "digits", device="cpu", isolation="process")
    try:
        hub.load("1.0.0")
        events: list[HubEvent] = []
        hub.subscribe(events.append)
        with pytest.raises(ModelLoadError, match="1.1.0"):
            hub.load("1.1.0", verify=False)
        assert [e.kind for e in events] == ["load_failed"]
        assert str(hub.active.version) == "1.0.0"
        assert hub.predict({"x": rows}).outputs[OUTPUT].shape == (16, 10)
        assert "1.1.0" not in hub
    finally:
        hub.close()


def test_thread_mode_labels_its_memory_figure(demo_repo: Path) -> None:
    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu", isolation="thread")
    try:
        loaded = hub.load("1.0.0")
        assert loaded.isolation == "thread"
        assert loaded.memory.scope == "load growth"
        assert "(load growth)" in str(loaded.memory)
    finally:
        hub.close()


def test_compare_runs_worker_versions_side_by_side_with_the_same_answers(
    hub: VersionHub, demo_repo: Path
) -> None:
    x, y = digits_dataset()[2:]
    result = compare(hub, x[:96], labels=y[:96], batch_size=16)
    assert result.versions == ["1.0.0", "1.1.0"]
    assert all(len(result.latencies[v]) == 6 for v in result.versions)
    threaded = VersionHub(ModelRepository(demo_repo), "digits", device="cpu", isolation="thread")
    try:
        threaded.load("1.0.0")
        threaded.load("1.1.0")
        reference = compare(threaded, x[:96], labels=y[:96], batch_size=16)
    finally:
        threaded.close()
    for version in result.versions:
        assert np.allclose(result.outputs[version], reference.outputs[version], atol=1e-5)
    assert result.accuracy == reference.accuracy
