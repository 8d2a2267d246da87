"""The image's health check (`python -m workbench.health`, `workbench health`): what it probes in each mode."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import pytest

from workbench import health as health_module
from workbench.health import healthcheck, main

if TYPE_CHECKING:
    from collections.abc import Iterator

TINI = ["tini", "-g", "--", "/usr/local/bin/start.sh"]


def _pid1(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setattr(health_module, "_pid1_args", lambda: args)


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (["serve", "--model", "digits", "--host", "0.0.0.0", "--port", "8123"],
         "http://127.0.0.1:8123/v2/health/ready"),
        (["serve", "--port=9000", "--host", "127.0.0.2"], "http://127.0.0.2:9000/v2/health/ready"),
        (["serve", "--model", "digits"], "http://127.0.0.1:8000/v2/health/ready"),
        (["serve", "--host", "::"], "http://[::1]:8000/v2/health/ready"),
        ([], "http://127.0.0.1:8888/api"),
        (["lab"], "http://127.0.0.1:8888/api"),
    ],
)
def test_the_mode_decides_what_is_probed(
    monkeypatch: pytest.MonkeyPatch, args: list[str], url: str
) -> None:
    monkeypatch.delenv("WORKBENCH_LISTEN", raising=False)
    monkeypatch.delenv("JUPYTER_PORT", raising=False)
    monkeypatch.delenv("WORKBENCH_SERVE_PORT", raising=False)
    _pid1(monkeypatch, [*TINI, *args])
    assert health_module._health_target()[1] == url


def test_lab_uses_the_configured_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_LISTEN", "0.0.0.0")
    monkeypatch.setenv("JUPYTER_PORT", "9999")
    _pid1(monkeypatch, [*TINI, "lab"])
    assert health_module._health_target() == ("lab", "http://127.0.0.1:9999/api")


def test_router_mode_checks_for_nginx(monkeypatch: pytest.MonkeyPatch) -> None:
    _pid1(monkeypatch, [*TINI, "router", "/srv/router/nginx.conf"])
    monkeypatch.setattr(health_module, "_nginx_runs", lambda: False)
    assert healthcheck() == (False, "nginx is not running")
    monkeypatch.setattr(health_module, "_nginx_runs", lambda: True)
    assert healthcheck() == (True, "nginx runs")


def test_other_commands_are_healthy_while_they_run(monkeypatch: pytest.MonkeyPatch) -> None:
    _pid1(monkeypatch, [*TINI, "bash"])
    assert healthcheck()[0] is True


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_exit_status_follows_the_answer(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", f"{server}/ok"]) == 0
    assert capsys.readouterr().out.startswith("healthy: ")
    assert main(["--url", f"{server}/not-ready"]) == 1
    assert "HTTP 503" in capsys.readouterr().out
    assert main(["--url", "http://127.0.0.1:1/", "--timeout", "1"]) == 1


def test_workbench_health_is_the_same_check(server: str) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    ok = CliRunner().invoke(app, ["health", "--url", f"{server}/ok"])
    assert ok.exit_code == 0 and ok.output.startswith("healthy: ")
    bad = CliRunner().invoke(app, ["health", "--url", f"{server}/not-ready"])
    assert bad.exit_code == 1 and "HTTP 503" in bad.output
