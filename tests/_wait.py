"""Polling helper for tests that wait on a process, a container or a port.

Modelled on the Jupyter docker-stacks' ``tests/utils``: poll a predicate on
``time.monotonic()`` until it holds or the timeout runs out, then fail with a
message that says what was awaited and what the predicate last returned.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The predicate never held within the timeout."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    *,
    what: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Exceptions listed in ``ignore`` count as "not yet" (e.g. ``ConnectionError``
    while a server starts). Raises :class:`WaitTimeout` (an ``AssertionError``)
    after ``timeout`` seconds, naming ``what`` and the last result or error.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError("timeout must be >= 0 and interval > 0")
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
        except ignore as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        now = time.monotonic()
        if now >= deadline:
            label = what or getattr(predicate, "__name__", repr(predicate))
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {label} (last: {last!r})")
        time.sleep(min(interval, deadline - now))
