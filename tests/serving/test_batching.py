"""Dynamic batching against a fake predictor: merging, splitting, isolation of failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from workbench.serving.batching import Batcher, BatchingConfig, ClientGone, DirectRunner, QueueFull


class FakePredictor:
    """Doubles ``x``; records each batch's rows and thread; fails on negative input."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.running = 0
        self.peak = 0  # most calls running at once
        self._lock = threading.Lock()

    def __call__(self, inputs: Any) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with self._lock:
            self.batches.append(int(x.shape[0]))
            self.threads.add(threading.current_thread().name)
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        if (x < 0).any():
            raise ValueError("negative input")
        return {"y": x * 2, "rows": np.arange(x.shape[0])}


def rows(n: int, value: float = 1.0, width: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.full((n, width), value, dtype=np.float32)}


@pytest.fixture
def pool() -> Any:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchingConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue_delay_ms"):
        BatchingConfig(max_queue_delay_ms=-1)


def test_direct_runner_runs_off_the_event_loop(pool: Any) -> None:
    fake = FakePredictor(0.01)
    seen: list[int] = []

    async def main() -> None:
        runner = DirectRunner(fake, pool, on_batch=lambda rows, _: seen.append(rows))
        result = await runner.submit(rows(3, 2.0))
        np.testing.assert_array_equal(result.outputs["y"], np.full((3, 4), 4.0))
        assert result.batch_size == 3 and result.compute_seconds >= 0.01
        await runner.close()

    asyncio.run(main())
    assert seen == [3]
    assert all(name.startswith("ThreadPoolExecutor") for name in fake.threads)


def test_concurrent_requests_merge_and_split_correctly(pool: Any) -> None:
    fake = FakePredictor(0.03)
    sizes: list[int] = []

    async def main() -> list[Any]:
        batcher = Batcher(fake, pool, BatchingConfig(max_batch_size=4, max_concurrent=1),
                          on_batch=lambda rows, _: sizes.append(rows))
        results = await asyncio.gather(
            *(batcher.submit(rows(1, float(i))) for i in range(9))
        )
        await batcher.close()
        return results

    results = asyncio.run(main())
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.outputs["y"], np.full((1, 4), 2.0 * i))
        assert result.outputs["rows"].shape == (1,)
    # the first runs at once on the free slot; the rest pile up and leave in full batches
    assert fake.batches == [1, 4, 4]
    assert sizes == fake.batches


def test_incompatible_requests_are_not_merged(pool: Any) -> None:
    fake = FakePredictor(0.02)

    async def main() -> None:
        batcher = Batcher(fake, pool, BatchingConfig(max_batch_size=8, max_queue_delay_ms=30))
        a, b, c = await asyncio.gather(
            batcher.submit(rows(1, 1.0, width=4)),
            batcher.submit(rows(1, 2.0, width=5)),
            batcher.submit(rows(2, 3.0, width=4)),
        )
        assert a.outputs["y"].shape == (1, 4)
        assert b.outputs["y"].shape == (1, 5)
        assert c.outputs["y"].shape == (2, 4)
        await batcher.close()

    asyncio.run(main())
    assert sorted(fake.batches) == [1, 3]


def test_queue_delay_waits_for_a_fuller_batch(pool: Any) -> None:
    fake = FakePredictor(0.0)

    async def late(delay: float) -> Any:
        await asyncio.sleep(delay)
        return await batcher.submit(rows(1))

    async def main() -> None:
        global batcher
        batcher = Batcher(fake, pool, BatchingConfig(max_batch_size=8, max_queue_delay_ms=150))
        await asyncio.gather(batcher.submit(rows(1)), late(0.02), late(0.04))
        await batcher.close()

    asyncio.run(main())
    assert fake.batches == [3]


def test_full_batch_leaves_without_waiting_for_the_delay(pool: Any) -> None:
    fake = FakePredictor(0.0)

    async def main() -> float:
        batcher = Batcher(fake, pool, BatchingConfig(max_batch_size=2, max_queue_delay_ms=5000))
        started = time.perf_counter()
        await asyncio.gather(batcher.submit(rows(1)), batcher.submit(rows(1)))
        await batcher.close()
        return time.perf_counter() - started

    assert asyncio.run(main()) < 2.0
    assert fake.batches == [2]


def test_oversized_request_runs_alone(pool: Any) -> None:
    fake = FakePredictor(0.0)

    async def main() -> None:
        batcher = Batcher(fake, pool, BatchingConfig(max_batch_size=4, max_queue_delay_ms=20))
        big, small = await asyncio.gather(batcher.submit(rows(10)), batcher.submit(rows(1)))
        assert big.outputs["y"].shape == (10, 4) and small.outputs["y"].shape == (1, 4)
        await batcher.close()

    asyncio.run(main())
    assert sorted(fake.batches) == [1, 10]


def test_a_failing_request_fails_alone(pool: Any) -> None:
    fake = FakePredictor(0.01)

    async def main() -> list[Any]:
        batcher = Batcher(fake, pool, BatchingConfig(max_batch_size=8, max_queue_delay_ms=50))
        results = await asyncio.gather(
            batcher.submit(rows(1, 1.0)),
            batcher.submit(rows(1, -1.0)),
            batcher.submit(rows(1, 3.0)),
            return_exceptions=True,
        )
        await batcher.close()
        return results

    good, bad, also_good = asyncio.run(main())
    assert isinstance(bad, ValueError)
    np.testing.assert_array_equal(good.outputs["y"], np.full((1, 4), 2.0))
    np.testing.assert_array_equal(also_good.outputs["y"], np.full((1, 4), 6.0))
    assert fake.batches[0] == 3  # tried together first, then one by one


def test_parallel_slots_use_several_threads(pool: Any) -> None:
    fake = FakePredictor(0.05)

    async def main() -> None:
        batcher = Batcher(fake, pool, BatchingConfig(max_batch_size=1, max_concurrent=2))
        await asyncio.gather(*(batcher.submit(rows(1)) for _ in range(4)))
        await batcher.close()

    asyncio.run(main())
    assert fake.peak == 2 and len(fake.threads) == 2
    assert fake.batches == [1, 1, 1, 1]


def test_submit_after_close_is_refused(pool: Any) -> None:
    async def main() -> None:
        batcher = Batcher(FakePredictor(0.0), pool, BatchingConfig())
        await batcher.close()
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.submit(rows(1))

    asyncio.run(main())


def test_a_full_queue_refuses_at_once(pool: Any) -> None:
    async def main() -> None:
        batcher = Batcher(FakePredictor(0.2), pool, BatchingConfig(max_batch_size=1,
                                                                   max_queue=2))
        first = asyncio.ensure_future(batcher.submit(rows(1)))
        await asyncio.sleep(0.05)  # computing: the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit(rows(1))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="queue is full"):
            await batcher.submit(rows(1))
        await asyncio.gather(first, *queued)
        await batcher.close()

    asyncio.run(main())


@pytest.mark.parametrize("batching", [True, False])
def test_a_request_whose_client_left_is_not_computed(pool: Any, batching: bool) -> None:
    fake = FakePredictor(0.1)

    async def main() -> None:
        runner: Batcher | DirectRunner
        if batching:
            runner = Batcher(fake, pool, BatchingConfig(max_batch_size=1))
        else:
            runner = DirectRunner(fake, pool)
        left = threading.Event()
        busy = asyncio.ensure_future(runner.submit(rows(1)))
        await asyncio.sleep(0.02)
        waiting = asyncio.ensure_future(runner.submit(rows(2), left.is_set))
        await asyncio.sleep(0.02)
        left.set()  # the client hangs up while its request waits
        await busy
        with pytest.raises(ClientGone):
            await waiting
        await runner.close()

    asyncio.run(main())
    assert fake.batches == [1]


class NoPool:
    """An executor that must not be used."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the batch went through a thread")


def test_batches_run_on_the_loop_with_an_async_predict_unmerged() -> None:
    """Process isolation's path: requests go to ``apredict`` unmerged, no thread hop."""
    fake = FakePredictor(0.0)
    calls: list[list[int]] = []

    async def apredict(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        calls.append([int(part["x"].shape[0]) for part in parts])
        await asyncio.sleep(0.02)
        return fake({"x": np.concatenate([part["x"] for part in parts])})

    async def main() -> list[Any]:
        batcher = Batcher(fake, NoPool(), BatchingConfig(max_batch_size=4),  # type: ignore[arg-type]
                          apredict=apredict)
        results = await asyncio.gather(
            *(batcher.submit(rows(1, float(i))) for i in range(6)),
            batcher.submit(rows(1, -1.0)),
            return_exceptions=True,
        )
        await batcher.close()
        return results

    *good, bad = asyncio.run(main())
    for i, result in enumerate(good):
        np.testing.assert_array_equal(result.outputs["y"], np.full((1, 4), 2.0 * i))
    assert isinstance(bad, ValueError)
    # the first alone, then 4 together; the failing batch of the last two retried one by one
    assert calls == [[1], [1, 1, 1, 1], [1, 1], [1], [1]]
    assert fake.threads == {threading.current_thread().name}


def test_a_request_that_did_not_wait_is_not_asked_about_its_client(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # asking costs a system call per request; one dispatched at once (an idle batcher
    # starts its batch inside submit) is sent on unasked, one that waited is asked
    from workbench.serving import batching

    monkeypatch.setattr(batching, "GONE_AFTER", 0.02)  # wide margins on a busy machine
    fake = FakePredictor(0.1)
    asked: list[str] = []

    def gone(label: str) -> Callable[[], bool]:
        def probe() -> bool:
            asked.append(label)
            return False
        return probe

    async def main() -> None:
        batcher = Batcher(fake, pool, BatchingConfig(max_batch_size=1))
        first = asyncio.ensure_future(batcher.submit(rows(1), gone("at once")))
        await asyncio.sleep(0)  # submitted: its batch started without waiting
        second = asyncio.ensure_future(batcher.submit(rows(1), gone("waited")))
        await asyncio.gather(first, second)  # the second waited ~100 ms behind the first
        await batcher.close()

    asyncio.run(main())
    assert fake.batches == [1, 1] and asked == ["waited"]
