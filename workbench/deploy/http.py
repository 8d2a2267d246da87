"""The one HTTP client seam of the deploy layer: a request with a total deadline, from
connect to the last byte.

httpx's (and the socket's) timeouts apply to each read: a server that answers one byte
every two seconds keeps a "5 s timeout" request alive for as long as it likes. Nothing in
the deploy layer can wait like that — not the serving client, not the router waiting for
nginx, not a metrics scrape, a Prometheus query, a reservoir fetch or a hook — so every one
of them asks :func:`request_within`, which gives a request ``seconds`` in all: a timer
shuts the socket down when they are up, which ends whatever read is blocked on it, and the
request raises :class:`DeadlineError`.

Each request has its own connection (loopback and cluster-local connects are cheap, and a
connection the timer shut down is never reused by mistake); proxies from the environment
are not used.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Answer", "DeadlineError", "request_within"]


class DeadlineError(WorkbenchError, TimeoutError):
    """A request did not finish (connect to last byte) within its deadline."""


@dataclass(frozen=True)
class Answer:
    """A whole HTTP answer: status, body, headers (names in lower case) and the seconds it took."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict, compare=False)
    seconds: float = field(default=0.0, compare=False)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not)."""
        return json.loads(self.body)


def request_within(
    method: str,
    url: str,
    seconds: float,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """``method url`` finished within ``seconds`` (:class:`DeadlineError` otherwise).

    Other failures raise ``OSError`` (refused, reset, unreachable) or
    ``http.client.HTTPException`` (not HTTP); ``ValueError`` for a URL that is not http(s).
    """
    if seconds <= 0:
        raise DeadlineError(f"{url}: no time left")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=seconds)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    started = time.monotonic()
    timer.start()
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set() or time.monotonic() - started >= seconds:
            raise DeadlineError(f"{url}: no full answer within {seconds:g} s") from exc
        raise
    finally:
        timer.cancel()
        conn.close()
    if expired.is_set():
        raise DeadlineError(f"{url}: no full answer within {seconds:g} s")
    return Answer(response.status, data, {k.lower(): v for k, v in response.getheaders()},
                  time.monotonic() - started)
