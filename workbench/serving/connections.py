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
- ``max_connections``: a connection beyond this many gets 503 at once.

A refused connection (408, 431, 503) is closed the way nginx closes one: the answer is
sent, the sending side shut, and whatever the client still sends is read and dropped
for up to :data:`LINGER_SECONDS`, so the client reads the answer instead of a reset.

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
LINGER_SECONDS = 2.0  # how long a refused connection's further input is read and dropped
PEER_CLOSED = "workbench.peer_closed"  # scope["extensions"] key of the probe
# a connection's phases, in order
_CONNECTED = 0  # nothing received yet
_HEAD = 1  # request line and headers arriving
_BODY = 2  # body arriving
_READ = 3  # the request is read; the app has it


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
        # One timer per connection, re-armed lazily: it looks at the phase and the time
        # of the last progress when it fires, so a request costs no timer operations.
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._phase = _CONNECTED
            self._since = 0.0  # when the phase began, or the body last progressed
            self._head_bytes = 0
            self._timer: TimerHandle | None = None
            self._lingering = False

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
            self._enter(_CONNECTED)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return  # refused: dropped until the client closes or the linger ends
            reading_head = self._phase <= _HEAD
            if reading_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if (reading_head and self._phase <= _HEAD
                    and self._head_bytes > limits.max_header_bytes):
                self._refuse(431, f"request line and headers exceed {limits.max_header_bytes} "
                                  "bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._enter(_HEAD)

        def on_headers_complete(self) -> None:
            self._enter(_BODY)
            super().on_headers_complete()
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
            extensions[PEER_CLOSED] = self._peer_closed

        def _peer_closed(self) -> bool:
            return self.transport.is_closing() or peer_closed(self.transport)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._since = self.loop.time()

        def on_message_complete(self) -> None:
            self._phase = _READ
            super().on_message_complete()

        def _enter(self, phase: int) -> None:
            self._phase = phase
            self._since = self.loop.time()
            if self._timer is None:
                self._arm(min(limits.header_timeout, limits.body_timeout))

        def _arm(self, delay: float) -> None:
            self._timer = self.loop.call_later(delay, self._check)

        def _check(self) -> None:
            self._timer = None
            now = self.loop.time()
            if self._phase == _READ:
                return  # the app has the request; the next one re-arms
            if self._phase == _BODY and self.flow.read_paused:
                # The server holds the body back, not the client: the clock starts again
                # when reading resumes (looked at often, so a resume is seen within 0.1 s).
                self._since = now
                self._arm(min(0.1, limits.body_timeout))
                return
            limit = limits.body_timeout if self._phase == _BODY else limits.header_timeout
            left = self._since + limit - now
            if left > 0:
                self._arm(left)
            elif self._phase == _CONNECTED:
                self.transport.close()  # connected and said nothing
            elif self._phase == _HEAD:
                self._refuse(408, f"the request headers did not arrive within "
                                  f"{limits.header_timeout:g} s")
            else:
                self._refuse(408, f"the request body stalled for {limits.body_timeout:g} s")

        def _refuse(self, status: int, message: str,
                    headers: dict[str, str] | None = None) -> None:
            self._cancel_timer()
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(raw_response(status, message, headers))
            self._linger()

        def _linger(self) -> None:
            # A lingering close, as nginx does: stop sending, then read and drop what the
            # client still sends for a while before closing. Closing with unread data
            # would reset the connection, and a client still sending (a huge header)
            # could lose the answer before reading it.
            self._lingering = True
            try:
                self.transport.write_eof()
                self.transport.resume_reading()
            except (NotImplementedError, OSError, RuntimeError):
                self.transport.close()
                return
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

        def _cancel_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    return GuardedHttpToolsProtocol


def peer_closed(transport: asyncio.BaseTransport) -> bool:
    """Whether the other end has closed (or reset) a TCP connection, without reading it."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    # uvloop hands out a pseudo-socket that cannot recv: peek through a socket object on
    # the same descriptor, detached afterwards so the descriptor stays open
    probe = socket.socket(sock.family, sock.type, fileno=sock.fileno())
    try:
        return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except OSError:
        return True  # reset, or already gone
    finally:
        probe.detach()
