"""HTTP requests with a total deadline, from connect to the last byte.

httpx's (and the socket's) timeouts apply to each read: a server that answers one byte
every two seconds keeps a "5 s timeout" request alive for as long as it likes. The canary
controller cannot wait like that — not for a metrics scrape, not for a hook — so
:func:`request_within` gives a request ``seconds`` in all: a timer shuts the socket down
when they are up, which ends whatever read is blocked on it, and the request raises
:class:`DeadlineError`.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Answer", "DeadlineError", "request_within"]


class DeadlineError(TimeoutError):
    """A request did not finish (connect to last byte) within its deadline."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def request_within(
    method: str,
    url: str,
    seconds: float,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """``method url`` finished within ``seconds`` (:class:`DeadlineError` otherwise).

    Other failures raise ``OSError`` (refused, reset, unreachable) or
    ``http.client.HTTPException`` (not HTTP).
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
        conn.request(method, path, body=body, headers=headers or {})
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
    return Answer(response.status, data)
