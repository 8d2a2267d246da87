"""Run inference off the event loop, one request at a time or in dynamic batches.

A :class:`Runner` takes decoded inputs and returns outputs, running the blocking
``predict`` in a thread pool so the event loop keeps accepting while Paddle computes.

:class:`DirectRunner` sends every request to the pool on its own. :class:`Batcher`
queues requests for one loaded version and merges compatible ones (same input names,
dtypes and per-row shapes) along the batch axis, up to ``max_batch_size`` rows, waiting
at most ``max_queue_delay_ms`` after the oldest queued request arrived. A batch only
forms when one of the ``max_concurrent`` execution slots is free, so under load requests
pile up while the slots compute and the next batch takes them all at once, without any
added delay; under light load a request waits at most the queue delay. Dispatch is
event-driven (on submit, on a batch's completion, on the delay's timer): no collector
task, so an idle request costs one hop to the thread pool and one back.

If a merged batch fails, its requests are retried one by one, so one bad request fails
alone and never takes its neighbours down with it.

A :class:`Batcher` given ``apredict`` (an awaitable predict over a batch's requests, not
yet merged) runs batches on the event loop instead: process isolation writes the
requests' rows straight into a worker's shared memory and awaits its reply on the loop,
with no thread hop and no concatenated copy.

The queue is bounded: a request that finds ``max_queue`` requests already waiting is
refused at once with :class:`QueueFull` (the server answers 503 with ``Retry-After``).
A request may come with ``gone()``, asked when its batch forms if it has waited at
least ``GONE_AFTER`` (a fresh one is sent on without the system call): one whose client has
disconnected meanwhile fails with :class:`ClientGone` instead of being computed. (The
event loop may not have seen the disconnect yet, when a predictor that holds the GIL
has just finished; ``gone()`` looks at the connection itself.) A cancelled request
leaves the queue unrun too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from workbench._types import Tensors, TensorsIn

logger = logging.getLogger(__name__)

PredictFn = Callable[["TensorsIn"], "Tensors"]
# the inputs of a batch's requests, in order, to be stacked along the batch axis
AsyncPredictFn = Callable[[list["TensorsIn"]], Awaitable["Tensors"]]
BatchCallback = Callable[[int, float], None]  # rows and predictor seconds of one run
Gone = Callable[[], bool]  # whether a request's client has disconnected
GONE_AFTER = 0.002  # seconds a request waits before its batch asks whether its client left


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are grouped: off, or up to ``max_batch_size`` rows within a delay."""

    enabled: bool = True
    max_batch_size: int = 8
    max_queue_delay_ms: float = 0.0
    max_concurrent: int = 1  # batches computing at once (one per predictor clone)
    max_queue: int = 256  # requests waiting for a predictor; more are refused (QueueFull)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, not {self.max_batch_size}")
        if not 0.0 <= self.max_queue_delay_ms <= 10_000.0:
            raise ValueError(
                f"max_queue_delay_ms must be in 0..10000, not {self.max_queue_delay_ms}"
            )
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, not {self.max_concurrent}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, not {self.max_queue}")


class ClientGone(WorkbenchError):
    """The client disconnected while its request waited; it was not computed."""


class QueueFull(WorkbenchError, RuntimeError):
    """A version's queue holds ``limit`` waiting requests already; try again shortly."""

    def __init__(self, name: str, limit: int) -> None:
        super().__init__(f"{name}: the queue is full ({limit} requests waiting); retry shortly")
        self.limit = limit


@dataclass(frozen=True)
class RunResult:
    """What a runner returns for one request."""

    outputs: Tensors
    queue_seconds: float  # from submit until a thread started computing
    compute_seconds: float  # predict() wall time for the batch that carried the request
    batch_size: int  # rows in that batch


class Runner:
    """Base of the two runners; ``on_batch(rows, seconds)`` is called once per computed batch."""

    def __init__(
        self,
        predict: PredictFn,
        executor: Executor,
        *,
        on_batch: BatchCallback | None = None,
        max_queue: int | None = None,
        name: str = "runner",
    ) -> None:
        self._predict = predict
        self._executor = executor
        self._on_batch = on_batch
        self._closed = False
        self.max_queue = max_queue
        self.name = name

    @property
    def queued(self) -> int:
        """Requests waiting for a predictor."""
        return 0

    async def submit(self, inputs: TensorsIn, gone: Gone | None = None) -> RunResult:
        """The outputs for ``inputs``; ``gone()`` is asked just before they would run."""
        raise NotImplementedError

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("runner is closed")
        if self.max_queue is not None and self.queued >= self.max_queue:
            raise QueueFull(self.name, self.max_queue)


class DirectRunner(Runner):
    """One request, one ``predict`` call, in the thread pool.

    ``max_concurrent`` requests compute at once; the others wait here (not in the
    pool's queue), so one whose client has gone is dropped before it runs.
    """

    def __init__(
        self,
        predict: PredictFn,
        executor: Executor,
        *,
        on_batch: BatchCallback | None = None,
        max_queue: int | None = None,
        max_concurrent: int = 1,
        name: str = "runner",
    ) -> None:
        super().__init__(predict, executor, on_batch=on_batch, max_queue=max_queue, name=name)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._waiting = 0

    @property
    def queued(self) -> int:
        return self._waiting

    async def submit(self, inputs: TensorsIn, gone: Gone | None = None) -> RunResult:
        self._check_open()
        loop = asyncio.get_running_loop()
        queued = time.perf_counter()

        def work() -> tuple[Tensors, float, float]:
            started = time.perf_counter()
            outputs = self._predict(inputs)
            return outputs, started, time.perf_counter()

        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        if gone is not None and gone():
            self._slots.release()
            raise ClientGone(f"{self.name}: the client left before its request ran")
        running = loop.run_in_executor(self._executor, work)
        # the slot is free when the thread is, even if this request is cancelled meanwhile
        running.add_done_callback(lambda _: self._slots.release())
        outputs, started, done = await asyncio.shield(running)
        rows = _rows(inputs) or 1
        if self._on_batch is not None:
            self._on_batch(rows, done - started)
        return RunResult(outputs, started - queued, done - started, rows)


class _Item:
    __slots__ = ("future", "gone", "inputs", "key", "queued", "rows")

    def __init__(self, inputs: TensorsIn, future: asyncio.Future[RunResult],
                 gone: Gone | None) -> None:
        self.inputs = inputs
        self.future = future
        self.gone = gone
        self.queued = time.perf_counter()
        self.rows = _rows(inputs)
        self.key = _batch_key(inputs)


class Batcher(Runner):
    """Dynamic batching for one loaded version."""

    def __init__(
        self,
        predict: PredictFn,
        executor: Executor,
        config: BatchingConfig,
        *,
        on_batch: BatchCallback | None = None,
        name: str = "batcher",
        apredict: AsyncPredictFn | None = None,
    ) -> None:
        super().__init__(predict, executor, on_batch=on_batch, max_queue=config.max_queue,
                         name=name)
        self.config = config
        self._apredict = apredict
        self._pending: deque[_Item] = deque()
        self._free = config.max_concurrent  # execution slots not computing a batch
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._pending)

    async def submit(self, inputs: TensorsIn, gone: Gone | None = None) -> RunResult:
        self._check_open()
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[RunResult] = loop.create_future()
        item = _Item(inputs, future, gone)
        self._pending.append(item)
        self._dispatch()
        try:
            return await future
        except asyncio.CancelledError:
            if item in self._pending:  # abandoned while waiting: it never runs
                self._pending.remove(item)
            raise

    async def close(self) -> None:
        """Stop batching; requests still queued fail with RuntimeError."""
        await super().close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the version was unloaded"))
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _dispatch(self) -> None:
        """Start batches while a slot is free and requests wait (event-driven, no task).

        With a queue delay, a batch that is not full waits until the oldest request
        has waited ``max_queue_delay_ms``; a timer comes back to it then.
        """
        loop = self._loop
        if loop is None or self._closed:
            return
        limit = self.config.max_batch_size
        delay = self.config.max_queue_delay_ms / 1000.0
        while self._free > 0 and self._pending:
            if self._abandoned(self._pending[0]):
                self._pending.popleft()
                continue
            if delay > 0 and self._ready_rows() < limit:
                remaining = self._pending[0].queued + delay - time.perf_counter()
                if remaining > 0:
                    if self._timer is None:
                        self._timer = loop.call_later(remaining, self._on_timer)
                    return
            batch = self._take(limit)
            self._free -= 1
            running: asyncio.Future[Any]
            if self._apredict is not None:
                running = loop.create_task(self._run_async(self._apredict, batch))
            else:
                running = loop.run_in_executor(self._executor, self._run, batch)
            self._running.add(running)
            running.add_done_callback(functools.partial(self._finish, batch=batch))

    def _abandoned(self, item: _Item) -> bool:
        """Cancelled, or its client has gone (then it fails with ClientGone).

        Only a request that has waited ``GONE_AFTER`` is asked about its client (a
        system call): one that just arrived almost never has lost it, and under load
        that is nearly every request."""
        if item.future.done():
            return True
        if (item.gone is not None and time.perf_counter() - item.queued >= GONE_AFTER
                and item.gone()):
            item.future.set_exception(ClientGone(f"{self.name}: the client left while its "
                                                 "request waited"))
            return True
        return False

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _ready_rows(self) -> int:
        """Rows queued that could join a batch with the oldest request."""
        first = self._pending[0]
        if first.key is None:
            return self.config.max_batch_size
        return sum(item.rows for item in self._pending if item.key == first.key)

    def _take(self, limit: int) -> list[_Item]:
        first = self._pending.popleft()
        batch = [first]
        if first.key is None or first.rows >= limit:
            return batch
        rows = first.rows
        kept: deque[_Item] = deque()
        while self._pending:
            item = self._pending.popleft()
            if self._abandoned(item):
                continue
            if item.key == first.key and rows + item.rows <= limit:
                batch.append(item)
                rows += item.rows
                if rows == limit:
                    break
            else:
                kept.append(item)
        kept.extend(self._pending)
        self._pending = kept
        return batch

    def _run(self, batch: list[_Item]) -> tuple[list[Tensors | BaseException], float, float]:
        """In a pool thread: compute one batch; returns per-item outcomes and timings."""
        started = time.perf_counter()
        if len(batch) == 1:
            outcomes = [_call(self._predict, batch[0].inputs)]
            return outcomes, started, time.perf_counter()
        try:
            outputs = _batch_major(self._predict(stack([item.inputs for item in batch])), batch)
        except Exception as exc:
            logger.debug("%s: batch of %d failed (%s); retrying one by one", self.name,
                         len(batch), exc)
            return [_call(self._predict, item.inputs) for item in batch], started, \
                time.perf_counter()
        return _split(outputs, batch), started, time.perf_counter()

    async def _run_async(self, apredict: AsyncPredictFn, batch: list[_Item]
                         ) -> tuple[list[Tensors | BaseException], float, float]:
        """On the loop: :meth:`_run` with ``apredict``."""
        started = time.perf_counter()
        if len(batch) == 1:
            outcomes = [await _acall(apredict, batch[0].inputs)]
            return outcomes, started, time.perf_counter()
        try:
            outputs = _batch_major(await apredict([item.inputs for item in batch]), batch)
        except Exception as exc:
            logger.debug("%s: batch of %d failed (%s); retrying one by one", self.name,
                         len(batch), exc)
            return [await _acall(apredict, item.inputs) for item in batch], started, \
                time.perf_counter()
        return _split(outputs, batch), started, time.perf_counter()

    def _finish(self, running: asyncio.Future[Any], batch: list[_Item]) -> None:
        self._running.discard(running)
        self._free += 1
        try:
            self._deliver(running, batch)
        finally:
            self._dispatch()

    def _deliver(self, running: asyncio.Future[Any], batch: list[_Item]) -> None:
        if running.cancelled():
            for item in batch:
                if not item.future.done():
                    item.future.cancel()
            return
        error = running.exception()
        if error is not None:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        outcomes, started, done = running.result()
        rows = sum(item.rows for item in batch)
        if self._on_batch is not None:
            self._on_batch(rows, done - started)
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(
                    RunResult(outcome, started - item.queued, done - started, rows)
                )


def _call(predict: PredictFn, inputs: TensorsIn) -> Tensors | BaseException:
    try:
        return predict(inputs)
    except Exception as exc:
        return exc


async def _acall(apredict: AsyncPredictFn, inputs: TensorsIn) -> Tensors | BaseException:
    try:
        return await apredict([inputs])
    except Exception as exc:
        return exc


def stack(parts: list[TensorsIn]) -> TensorsIn:
    """The inputs of several requests merged along the batch axis (one request: as it is)."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _batch_major(outputs: Tensors, batch: list[_Item]) -> Tensors:
    total = sum(item.rows for item in batch)
    if any(np.ndim(out) == 0 or np.shape(out)[0] != total for out in outputs.values()):
        raise ValueError("an output is not batch-major; cannot split the batch")
    return outputs


def _split(outputs: Tensors, batch: list[_Item]) -> list[Tensors | BaseException]:
    """Each request's rows of a batch's outputs (views, no copies)."""
    outcomes: list[Tensors | BaseException] = []
    offset = 0
    for item in batch:
        end = offset + item.rows
        outcomes.append({name: out[offset:end] for name, out in outputs.items()})
        offset = end
    return outcomes


def _rows(inputs: TensorsIn) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if np.ndim(array) else 1
    return 0


def _batch_key(inputs: TensorsIn) -> tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...] | None:
    """Requests with equal keys can be stacked along axis 0; None means never batch."""
    key = []
    rows = None
    for name, array in inputs.items():
        shape = array.shape
        if not shape or array.dtype.kind == "O":
            return None
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            return None
        key.append((name, array.dtype, tuple(shape[1:])))
    return tuple(key) if len(key) == 1 else tuple(sorted(key, key=_first))


def _first(item: tuple[str, Any, Any]) -> str:
    return item[0]
