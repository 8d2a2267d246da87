"""Progress for long work: a tqdm bar (a widget in notebooks) while the work runs on a thread.

The work runs on a worker thread and the calling thread only polls and redraws,
so the bar moves while Paddle computes and a Ctrl-C (kernel interrupt) returns
control at once; the abandoned work finishes on its own in the background.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")
DELAY = 0.5
log = logging.getLogger(__name__)


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
    """Run ``work()`` on a thread and show progress until it returns (or raises).

    ``done()`` says how many of ``total`` units are finished; without it the bar
    counts seconds. ``status()`` may return a short text shown after the bar.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"workbench-{desc}", daemon=True)
    started = time.monotonic()
    with bar(total, desc, unit=unit if done else "s", disable=disable) as progress:
        thread.start()
        shown = 0
        while thread.is_alive():
            thread.join(interval)
            now = done() if done is not None else int(time.monotonic() - started)
            if total is not None:
                now = min(now, total)
            if now > shown:
                progress.update(now - shown)
                shown = now
            if status is not None:
                try:
                    progress.set_postfix_str(status(), refresh=False)
                except Exception:
                    log.debug("progress status failed", exc_info=True)
            progress.refresh()  # also shows the bar once the delay has passed
        if total is not None and shown < total and "error" not in result:
            progress.update(total - shown)
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]
