"""Connection limits uvicorn does not enforce: header and body read timeouts, header size,
and the number of open connections.

uvicorn (0.54, httptools) closes a connection only when it has been idle for
``timeout_keep_alive`` *after a response*. A client that connects and sends nothing, one
that sends its headers a byte at a time (slowloris), or one that stops half-way through
its body holds its connection for ever, and httptools buffers headers of any size. A
directly exposed instance is taken offline by a few thousand such connections.

:func:`guarded_protocol` returns uvicorn's httptools protocol with these limits added:

- ``header_timeout``: the request line and headers must arrive within this many seconds
  of the connection (or of the request's first byte on a kept-alive connection);
  a connection that sent nothing is closed, one that sent part of a request gets 408.
- ``body_timeout``: the body may pause at most this long between two reads (while the
  server is not itself holding the reading back); then 408.
- ``max_header_bytes``: larger request heads get 431.
- ``max_connections``: a connection beyond this many gets 503 and is closed at once.

Each request's scope carries a probe, ``scope["extensions"][PEER_CLOSED]()``, that says
whether the client has closed its end, by peeking at the socket: the batcher asks it
before computing a queued request, even when the event loop has not yet run the
callbacks that would report the disconnect.

The idle time between two requests on a kept-alive connection is uvicorn's own
``timeout_keep_alive`` (:attr:`ConnectionLimits.keep_alive_timeout`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncio import TimerHandle

logger = logging.getLogger(__name__)

_REASONS = {
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
WARN_EVERY = 10.0  # seconds between two warnings about refused connections
PEER_CLOSED = "workbench.peer_closed"  # scope["extensions"] key of the probe


@dataclass(frozen=True)
class ConnectionLimits:
    """Timeouts and sizes that keep slow or abusive clients from holding the server."""

    keep_alive_timeout: float = 5.0  # idle between requests on a kept-alive connection
    header_timeout: float = 10.0  # from connection (or first byte) to the end of the headers
    body_timeout: float = 30.0  # longest pause while reading a request body
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1024

    def __post_init__(self) -> None:
        for name in ("keep_alive_timeout", "header_timeout", "body_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.max_header_bytes < 1024:
            raise ValueError(f"max_header_bytes must be at least 1024, not {self.max_header_bytes}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, not {self.max_connections}")


def raw_response(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    from workbench.serving.protocol import error_body

    body = error_body(message)
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
             "content-type: application/json", f"content-length: {len(body)}",
             "connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class with ``limits`` enforced."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    warned = [0.0]

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0
            self._head_done = False
            self._begun = False  # a request's first byte has arrived
            self._head_timer: TimerHandle | None = None
            self._body_timer: TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                now = time.monotonic()
                if now - warned[0] > WARN_EVERY:
                    warned[0] = now
                    logger.warning("refusing connections: %d open (limit %d)",
                                   len(self.connections) - 1, limits.max_connections)
                self._refuse(503, "too many open connections; retry shortly",
                             {"retry-after": "1"})
                return
            self._head_timer = self.loop.call_later(limits.header_timeout, self._head_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            reading_head = not self._head_done
            if reading_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if reading_head and not self._head_done and self._head_bytes > limits.max_header_bytes:
                self._refuse(431, f"request line and headers exceed {limits.max_header_bytes} "
                                  "bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._head_done = False
            self._begun = True
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_late)

        def on_headers_complete(self) -> None:
            self._head_done = True
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().on_headers_complete()
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
            extensions[PEER_CLOSED] = self._peer_closed
            self._arm_body_timer()

        def _peer_closed(self) -> bool:
            return self.transport.is_closing() or peer_closed(self.transport)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._arm_body_timer()

        def on_message_complete(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            super().on_message_complete()

        def _arm_body_timer(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
            self._body_timer = self.loop.call_later(limits.body_timeout, self._body_late)

        def _head_late(self) -> None:
            self._head_timer = None
            if not self._begun:
                self.transport.close()  # connected and said nothing
                return
            self._refuse(408, f"the request headers did not arrive within "
                              f"{limits.header_timeout:g} s")

        def _body_late(self) -> None:
            self._body_timer = None
            if self.flow.read_paused:  # the server is holding the body back, not the client
                self._arm_body_timer()
                return
            self._refuse(408, f"the request body stalled for {limits.body_timeout:g} s")

        def _refuse(self, status: int, message: str,
                    headers: dict[str, str] | None = None) -> None:
            self._cancel_timers()
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(raw_response(status, message, headers))
            self.transport.close()

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None

    return GuardedHttpToolsProtocol


def peer_closed(transport: asyncio.BaseTransport) -> bool:
    """Whether the other end has closed (or reset) a TCP connection, without reading it."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:  # uvloop hands out a pseudo-socket: peek through a duplicate of its descriptor
        with socket.fromfd(sock.fileno(), sock.family, sock.type) as probe:
            return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except OSError:
        return True  # reset, or already gone
