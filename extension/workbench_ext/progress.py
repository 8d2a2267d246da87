"""Progress for long work: a tqdm bar (a widget in notebooks) while the work runs on a worker.

All Paddle work of the extension (loading, comparing, benchmarking) runs on
long-lived threads: Paddle Inference fails with ``std::exception`` when predictors
are run from a succession of short-lived threads (its per-thread state outlives
the thread), so a fresh thread per task is not an option. The single process-wide
worker thread runs the work while the calling thread only polls and redraws, so
the bar moves while Paddle computes and a Ctrl-C (kernel interrupt) returns
control at once; the interrupted work finishes on its own on the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")
DELAY = 0.5
log = logging.getLogger(__name__)
_WORKER: ThreadPoolExecutor | None = None
_WORKER_THREAD: threading.Thread | None = None
_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def worker() -> ThreadPoolExecutor:
    """The process-wide worker thread for Paddle work (created on first use, never replaced)."""
    global _WORKER
    with _LOCK:
        if _WORKER is None:
            _WORKER = ThreadPoolExecutor(1, thread_name_prefix="workbench-worker")
        return _WORKER


def on_worker() -> bool:
    return threading.current_thread() is _WORKER_THREAD


def submit(work: Callable[[], T]) -> Future[T]:
    """Run ``work`` on the worker thread (inline, already finished, when called from it)."""
    if on_worker():
        future: Future[T] = Future()
        try:
            future.set_result(work())
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def mark() -> T:
        global _WORKER_THREAD
        _WORKER_THREAD = threading.current_thread()
        return work()

    return worker().submit(mark)


def pool(size: int) -> ThreadPoolExecutor:
    """A long-lived pool of ``size`` threads (for concurrent requests to loaded versions)."""
    with _LOCK:
        if size not in _POOLS:
            _POOLS[size] = ThreadPoolExecutor(size, thread_name_prefix=f"workbench-pool{size}")
        return _POOLS[size]


def bar(total: int | None = None, desc: str = "", *, unit: str = "it", disable: bool = False) -> Any:
    """A ``tqdm.auto`` bar that cleans up after itself."""
    from tqdm.auto import tqdm

    # Shown only for work that takes longer than DELAY seconds; a finished bar stays (green).
    return tqdm(
        total=total, desc=desc, unit=unit, leave=True, delay=DELAY, disable=disable, dynamic_ncols=True
    )


def run_with_progress(
    work: Callable[[], T],
    *,
    desc: str,
    total: int | None = None,
    done: Callable[[], int] | None = None,
    status: Callable[[], str] | None = None,
    unit: str = "it",
    interval: float = 0.2,
    disable: bool = False,
) -> T:
    """Run ``work()`` on the worker thread and show progress until it returns (or raises).

    ``done()`` says how many of ``total`` units are finished; without it the bar
    counts seconds. ``status()`` may return a short text shown after the bar.
    Called from the worker itself (a panel's task), the work runs inline and a
    helper thread draws the progress.
    """
    started = time.monotonic()
    finished = threading.Event()

    def draw(progress: Any, wait: Callable[[float], bool]) -> None:
        shown = 0
        while not wait(interval):
            shown = _tick(progress, shown, total, done, status, started)
        _tick(progress, shown, total, done, status, started)

    with bar(total, desc, unit=unit if done else "s", disable=disable) as progress:
        if on_worker():
            painter = threading.Thread(target=draw, args=(progress, finished.wait), daemon=True)
            painter.start()
            try:
                return work()
            finally:
                finished.set()
                painter.join()
        future = submit(work)

        def wait(seconds: float) -> bool:
            try:
                future.exception(timeout=seconds)
            except FutureTimeout:
                return False
            return True

        draw(progress, wait)
        return future.result()


def _tick(
    progress: Any,
    shown: int,
    total: int | None,
    done: Callable[[], int] | None,
    status: Callable[[], str] | None,
    started: float,
) -> int:
    try:
        now = done() if done is not None else int(time.monotonic() - started)
        if total is not None:
            now = min(now, total)
        if now > shown:
            progress.update(now - shown)
            shown = now
        if status is not None:
            progress.set_postfix_str(status(), refresh=False)
        progress.refresh()  # also shows the bar once the delay has passed
    except Exception:
        log.debug("drawing progress failed", exc_info=True)
    return shown
