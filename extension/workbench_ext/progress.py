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
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, TypeVar

from workbench_ext._ipython import in_kernel

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

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


#: A bar over named steps: no rate (steps take seconds each), the elapsed time and the step.
STEP_FORMAT = "{desc}: {n_fmt}/{total_fmt} steps |{bar}| {elapsed}{postfix}"


def frontend() -> str:
    """Where a bar draws: ``widget`` (a Jupyter kernel), ``terminal`` (stderr is a tty) or ``lines``.

    Chosen per bar, not once per process as ``tqdm.auto`` does (it looks at which
    modules were imported, so a terminal IPython that imported ipykernel, or a test
    run, gets widget bars printed as text).
    """
    if in_kernel():
        return "widget"
    isatty = getattr(sys.stderr, "isatty", None)
    return "terminal" if isatty is not None and isatty() else "lines"


def bar(
    total: int | None = None,
    desc: str = "",
    *,
    unit: str = "it",
    disable: bool = False,
    bar_format: str | None = None,
) -> Any:
    """A tqdm bar for the current frontend that cleans up after itself.

    In a kernel, an ipywidgets bar whose output is re-published with its final state
    when it closes (a saved notebook shows ``100%``, not the ``0%`` it was displayed
    with); in a terminal, tqdm's ``\\r``-redrawn line, trimmed to the width; elsewhere
    (a pipe, a log file, a captured stream) one line per change of count or step,
    never the same line twice. Shown only for work that takes longer than DELAY seconds.
    """
    from workbench_ext import _bars

    kind = frontend()
    options: dict[str, Any] = {
        "total": total,
        "desc": desc,
        "unit": unit,
        "leave": True,
        "delay": DELAY,
        "disable": disable,
        "dynamic_ncols": True,
        "bar_format": bar_format,
    }
    if kind == "widget":
        return _bars.NotebookBar(**options)
    if kind == "lines":
        return _bars.LineBar(**options)
    from tqdm.std import tqdm

    return tqdm(**options)


def run_with_progress(
    work: Callable[[], T],
    *,
    desc: str,
    total: int | None = None,
    done: Callable[[], int] | None = None,
    status: Callable[[], str] | None = None,
    steps: Sequence[str] | None = None,
    unit: str = "it",
    interval: float = 0.2,
    disable: bool = False,
) -> T:
    """Run ``work()`` on the worker thread and show progress until it returns (or raises).

    ``done()`` says how many of ``total`` units are finished. Work in a few named
    ``steps`` shows ``n/N steps``, the elapsed time and the current step's name
    (``done()`` counts finished steps); work that reports nothing is one step named
    ``desc``. ``status()`` may return a short text shown after the bar. Called from
    the worker itself (a panel's task), the work runs inline and a helper thread
    draws the progress.
    """
    finished = threading.Event()
    bar_format = None
    if done is None or steps is not None:
        steps = list(steps or [desc])
        total, bar_format = len(steps), STEP_FORMAT
        if done is None:
            done = _nothing_done  # finished when the work returns
        if status is None:
            status = _step_name(done, steps)

    def draw(progress: Any, wait: Callable[[float], bool]) -> None:
        shown = 0
        while not wait(interval):
            shown = _tick(progress, shown, total, done, status)
        _tick(progress, shown, total, done, status)

    with bar(total, desc, unit=unit, disable=disable, bar_format=bar_format) as progress:
        if on_worker():
            painter = threading.Thread(target=draw, args=(progress, finished.wait), daemon=True)
            painter.start()
            try:
                result = work()
            finally:
                finished.set()
                painter.join()
            _finish(progress, total)
            return result
        future = submit(work)

        def wait(seconds: float) -> bool:
            try:
                future.exception(timeout=seconds)
            except FutureTimeout:
                return False
            return True

        draw(progress, wait)
        result = future.result()
        _finish(progress, total)
        return result


def _nothing_done() -> int:
    return 0


def _step_name(done: Callable[[], int], names: Sequence[str]) -> Callable[[], str]:
    """The name of the step under way (the last one once all are done)."""

    def name() -> str:
        return names[min(done(), len(names) - 1)]

    return name


def _finish(progress: Any, total: int | None) -> None:
    """Work that returned did all its steps: fill the bar."""
    if total is not None and progress.n < total:
        progress.update(total - progress.n)
        progress.set_postfix_str("done", refresh=False)
        progress.refresh()


def _tick(
    progress: Any,
    shown: int,
    total: int | None,
    done: Callable[[], int] | None,
    status: Callable[[], str] | None,
) -> int:
    try:
        now = done() if done is not None else 0
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
