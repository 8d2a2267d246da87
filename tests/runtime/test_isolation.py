"""Process isolation with real Paddle models in worker processes."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
import pytest

from tests._python import NO_PADDLE, run_python
from tests._wait import wait_until
from tests.runtime._swap import swap_under_load
from workbench import ModelLoadError, ModelRepository, VersionHub, compare
from workbench.errors import WorkerDiedError
from workbench.model.demo import digits_dataset
from workbench.runtime.worker import backoff_delays

if TYPE_CHECKING:
    from collections.abc import Callable

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


def _kill_first_worker_under_load(
    loaded: Any, client: Callable[[], None], stop: threading.Event, threads: int = 4
) -> tuple[int, float, float]:
    """Run ``client`` (which loops until ``stop``) on ``threads`` threads, ``kill -9`` the
    version's first worker, wait until the version is down, then ready again, and stop the
    clients; returns the killed pid, when it was killed and when the version was back."""
    running = [threading.Thread(target=client) for _ in range(threads)]
    for thread in running:
        thread.start()
    time.sleep(0.3)
    victim = loaded.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: loaded.state.value == "down", 10, what="the version to go down")
    wait_until(lambda: loaded.state.value == "ready", 90, what="the worker to restart")
    back = time.monotonic()
    stop.set()
    for thread in running:
        thread.join(30)
    return victim, killed, back


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
    """)
    assert run_python(script + NO_PADDLE + "print('ok')\n").strip().endswith("ok")


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

    victim, _, _ = _kill_first_worker_under_load(loaded, client, stop)
    assert loaded.stats()["worker_restarts"] == 1
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


def test_compare_of_worker_versions_runs_them_at_the_same_time(hub: VersionHub, demo_repo: Path) -> None:
    """Versions in worker processes overlap (time in batches > wall time); in-process ones take turns."""
    x = digits_dataset()[2][:240]
    result = compare(hub, x, batch_size=1)
    assert result.seconds > 0
    assert result.overlap > 1.2, (result.overlap, result.seconds)
    threaded = VersionHub(ModelRepository(demo_repo), "digits", device="cpu", isolation="thread")
    try:
        threaded.load("1.0.0")
        threaded.load("1.1.0")
        serial = compare(threaded, x, batch_size=1)
    finally:
        threaded.close()
    assert serial.overlap < 1.0, serial.overlap


def test_a_worker_that_cannot_reload_is_retried_with_backoff_until_it_can(
    repo_copy: Path, rows: np.ndarray
) -> None:
    """Restarts wait 0, 1, 1, 2 ... s; while they fail the version stays down and says so."""
    hub = VersionHub(ModelRepository(repo_copy), "digits", device="cpu", isolation="process")
    events: list[HubEvent] = []
    hub.subscribe(events.append)
    try:
        loaded = hub.load("1.0.0")
        expected = hub.predict({"x": rows}).outputs[OUTPUT]
        params = repo_copy / "digits" / "1.0.0" / "inference.pdiparams"
        good = params.read_bytes()
        params.write_bytes(b"not paddle parameters" * 10)  # the restarts cannot load it
        os.kill(loaded.worker_pids[0], signal.SIGKILL)
        wait_until(lambda: sum(e.kind == "worker_restart_failed" for e in events) >= 3, 90,
                   what="three failed restart attempts")
        assert loaded.state.value == "down"
        with pytest.raises(WorkerDiedError, match="digits:1.0.0"):
            hub.predict({"x": rows})
        params.write_bytes(good)
        wait_until(lambda: loaded.state.value == "ready", 90, what="the worker to come back")
        kinds = [e.kind for e in events if e.kind.startswith("worker")]
        assert kinds[0] == "worker_died" and kinds[-1] == "worker_restarted"
        assert set(kinds[1:-1]) == {"worker_restart_failed"} and len(kinds) >= 5, kinds
        failed = [e.time for e in events if e.kind == "worker_restart_failed"]
        back = next(e.time for e in events if e.kind == "worker_restarted")
        # attempts 2 and 3 wait 1 s each after the one before failed, attempt 4 waits 2 s
        assert failed[1] - failed[0] >= 1.0 and failed[2] - failed[1] >= 1.0, failed
        assert (back if len(failed) == 3 else failed[3]) - failed[2] >= 2.0, (failed, back)
        assert np.allclose(hub.predict({"x": rows}).outputs[OUTPUT], expected)
    finally:
        hub.close()


def test_restart_delays_follow_torchserve_and_never_give_up() -> None:
    delays = list(itertools.islice(backoff_delays(), 40))
    assert delays[:8] == [0.0, 1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0]
    assert max(delays) == 30.0 and delays[-20:] == [30.0] * 20  # still trying, slowly


def test_unload_drains_in_flight_requests_then_stops_the_workers(
    demo_repo: Path, rows: np.ndarray
) -> None:
    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu", isolation="process")
    try:
        hub.load("1.0.0")
        loaded = hub.load("1.1.0", activate=False)
        pids = loaded.worker_pids
        segments = [lane.worker._segment.name for lane in loaded._worker_lanes]  # type: ignore[union-attr]
        assert all(Path("/dev/shm", name).exists() for name in segments)
        unloaded = threading.Event()
        with hub.lease("1.1.0") as leased:  # a request in flight on 1.1.0
            unloader = threading.Thread(target=lambda: (hub.unload("1.1.0"), unloaded.set()))
            unloader.start()
            wait_until(lambda: leased.state.value == "draining", 10, what="1.1.0 to drain")
            time.sleep(0.5)
            assert not unloaded.is_set()
            assert all(psutil.pid_exists(pid) for pid in pids), "workers stop only after the drain"
            assert leased.predict({"x": rows})[OUTPUT].shape == (16, 10)  # the in-flight one finishes
        unloader.join(30)
        assert unloaded.is_set()
        assert not any(psutil.pid_exists(pid) for pid in pids), pids
        assert loaded.memory.rss_bytes == 0
        assert not any(Path("/dev/shm", name).exists() for name in segments), segments
        assert str(hub.active.version) == "1.0.0"
    finally:
        hub.close()


def test_tensors_larger_than_the_shared_segment_grow_it_and_match_in_process(demo_repo: Path) -> None:
    """ResNet inputs of 4 x 3x224x224 float32 (2.4 MB) outgrow the 1 MiB segment a worker starts with."""
    repo = ModelRepository(demo_repo)
    sample = repo.sample("resnet", "1.0.0")
    name = next(iter(sample))
    rng = np.random.default_rng(0)
    batch = {name: rng.standard_normal((4, *sample[name].shape[1:])).astype(np.float32)}
    assert batch[name].nbytes > 2**20
    reference = VersionHub(repo, "resnet", device="cpu", isolation="thread")
    try:
        reference.load("1.0.0")
        expected = reference.predict(batch).outputs
    finally:
        reference.close()
    hub = VersionHub(repo, "resnet", device="cpu", isolation="process")
    try:
        loaded = hub.load("1.0.0")
        worker = loaded._worker_lanes[0].worker  # type: ignore[attr-defined]
        first = worker._segment.name
        got = hub.predict(batch).outputs
        assert worker._segment.size >= batch[name].nbytes and worker._segment.name != first
        assert not Path("/dev/shm", first).exists()  # the outgrown segment is unlinked
        for key, value in expected.items():
            assert np.allclose(got[key], value, atol=1e-4)
        assert hub.predict({name: batch[name][:1]}).outputs.keys() == expected.keys()
    finally:
        hub.close()


def test_with_two_workers_a_kill_9_fails_only_the_batch_it_was_running(
    demo_repo: Path, rows: np.ndarray
) -> None:
    """The other worker keeps answering while the dead one restarts: one request at most fails."""
    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu", isolation="process", workers=2)
    failures: list[BaseException] = []
    answered: list[float] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                hub.predict({"x": rows})
                answered.append(time.monotonic())
            except WorkerDiedError as exc:
                failures.append(exc)

    try:
        loaded = hub.load("1.0.0")
        assert len(set(loaded.worker_pids)) == 2
        victim, killed, back = _kill_first_worker_under_load(loaded, client, stop)
        assert len(failures) <= 1, failures  # the one batch the killed worker was running
        assert all("digits:1.0.0" in str(exc) for exc in failures)
        assert any(killed + 0.2 < t < back for t in answered), "the other worker answered meanwhile"
        assert victim not in loaded.worker_pids and len(loaded.worker_pids) == 2
    finally:
        stop.set()
        hub.close()


def test_auto_isolation_is_process_on_a_gpu_and_thread_on_the_cpu(demo_repo: Path) -> None:
    repo = ModelRepository(demo_repo)
    assert VersionHub(repo, "digits", device="gpu:0").isolation == "process"
    assert VersionHub(repo, "digits", device="cpu").isolation == "thread"
    assert VersionHub(repo, "digits", device="cpu", isolation="process").isolation == "process"


def test_a_worker_is_a_fresh_interpreter_in_its_own_process_group(hub: VersionHub) -> None:
    """Never a fork of a process that may hold Paddle; a signal to the front's group spares it;
    the front's session, so the scheduler does not treat it as another tenant."""
    for loaded in hub.loaded:
        for pid in loaded.worker_pids:
            worker = psutil.Process(pid)
            assert worker.cmdline()[1:3] == ["-m", "workbench.runtime.worker"], worker.cmdline()
            assert worker.ppid() == os.getpid()
            assert os.getpgid(pid) == pid != os.getpgid(0)
            assert os.getsid(pid) == os.getsid(0)


def test_hub_workers_keep_the_normal_scheduling_policy(hub: VersionHub) -> None:
    # only `workbench serve` asks for SCHED_BATCH: a notebook's single requests would
    # wait behind whatever else runs on the core
    pids = hub.get("1.0.0").worker_pids  # type: ignore[attr-defined]
    assert pids and all(os.sched_getscheduler(pid) == os.SCHED_OTHER for pid in pids)


def test_a_process_loaded_version_takes_named_typed_parameters_only(demo_repo: Path) -> None:
    import inspect

    from workbench.runtime.device import Device
    from workbench.runtime.isolated import ProcessLoadedVersion

    parameters = inspect.signature(ProcessLoadedVersion).parameters.values()
    assert not [p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    repo = ModelRepository(demo_repo)
    version = repo.resolve("digits", "1.0.0")
    # each worker process builds its own predictor: an in-process factory has no place here
    kwargs: dict[str, Any] = {"factory": lambda: None}
    with pytest.raises(TypeError, match="factory"):
        ProcessLoadedVersion(model="digits", version=version, manifest=repo.manifest("digits", version),
                             path=repo.path("digits", version), device=Device.parse("cpu"), **kwargs)
