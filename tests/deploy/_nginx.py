"""Helpers for router tests: tiny colour upstreams and free loopback ports."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from tests._components import require
from workbench.deploy.nginx import NginxRouter

if TYPE_CHECKING:
    from collections.abc import Iterator


def nginx_available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


def require_nginx() -> None:
    require("nginx", nginx_available(), "install nginx (e.g. apt-get install nginx-light)")


@contextlib.contextmanager
def running_router(workdir: Path) -> Iterator[NginxRouter]:
    """A router in ``workdir`` (skips without nginx), stopped afterwards."""
    require_nginx()
    nginx = NginxRouter(workdir)
    try:
        yield nginx
    finally:
        nginx.stop()
    assert not nginx.running


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: ColorServer

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        received = self.rfile.read(length) if length else b""
        status = self.server.status
        body = json.dumps({"color": self.server.color, "version": self.server.version,
                           "received": len(received)}).encode()
        with self.server.lock:  # counted before the answer leaves, so a client sees it counted
            self.server.hits += 1
            self.server.statuses.append(status)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-model-version", self.server.version)
        # nginx must replace this with the colour it routed to
        self.send_header("x-deploy-color", "upstream-says-" + self.server.color)
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class ColorServer(ThreadingHTTPServer):
    """An HTTP/1.1 server on 127.0.0.1 answering every request with its colour and version
    (and how many body bytes it received), with status ``status`` (200 unless set)."""

    daemon_threads = True

    def __init__(self, color: str, version: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.color = color
        self.version = version
        self.hits = 0
        self.status = 200
        self.statuses: list[int] = []  # the status of every answer, in order
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name=f"{color}-upstream")
        self._thread.daemon = True
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)
