"""DockerNginx: the router's nginx in a container of the workbench image."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.docker.conftest import free_port
from workbench.deploy.nginx import NginxRouter
from workbench.deploy.platforms.docker.router import DockerNginx
from workbench.deploy.routing import RoutingTable, Upstream
from workbench.errors import RouterError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.docker.conftest import DockerEngine

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _upstream(version: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f'{{"version": "{version}"}}'.encode()
            self.send_response(200)
            self.send_header("x-model-version", version)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    blue, green = _upstream("1.0.0"), _upstream("1.1.0")
    try:
        yield (
            Upstream("blue", "127.0.0.1", blue.server_address[1], "1.0.0"),
            Upstream("green", "127.0.0.1", green.server_address[1], "1.1.0"),
        )
    finally:
        for server in (blue, green):
            server.shutdown()
            server.server_close()


def test_router_runs_reloads_and_stops_in_a_container(
    docker_engine: DockerEngine, upstreams: tuple[Upstream, Upstream], tmp_path: Path
) -> None:
    runner = DockerNginx(docker_engine.host, image=docker_engine.image)
    router = NginxRouter(tmp_path / "router", runner=runner)
    table = RoutingTable(deployment="rt", listen_port=free_port(), upstreams=upstreams)
    try:
        router.apply(table)  # check + start
        assert runner.is_running(router.conf_path)
        container = docker_engine.client.containers.get(DockerNginx.container_name(router.conf_path))
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        response = httpx.get(f"{router.url}/v2/health/ready", timeout=5)
        assert (response.headers["x-deploy-color"], response.headers["x-model-version"]) == (
            "blue", "1.0.0",
        )

        router.apply(table.with_weight(100))  # check + graceful reload
        response = httpx.get(f"{router.url}/v2/health/ready", timeout=5)
        assert response.headers["x-deploy-color"] == "green"

        # a new runner (another process) finds the same masters: router and front
        again = DockerNginx(docker_engine.host, image=docker_engine.image)
        assert again.is_running(router.conf_path) and again.is_running(router.front_conf_path)

        broken = router.workdir / "broken.conf"
        broken.write_text("events {}\nhttp { nonsense_directive on; }\n")
        with pytest.raises(RouterError, match="nonsense_directive"):
            runner.check(broken)
    finally:
        router.stop(timeout=5)
    assert not runner.is_running(router.conf_path)
    router.stop()  # idempotent


def test_check_without_a_running_router_uses_a_throwaway_container(
    docker_engine: DockerEngine, upstreams: tuple[Upstream, Upstream], tmp_path: Path
) -> None:
    runner = DockerNginx(docker_engine.host, image=docker_engine.image)
    router = NginxRouter(tmp_path / "router", runner=runner)
    table = RoutingTable(deployment="rt", listen_port=free_port(), upstreams=upstreams)
    (router.workdir / "front").mkdir(parents=True)  # the router listens on a socket in it
    conf = router.workdir / "candidate.conf"
    conf.write_text(router.render(table))
    runner.check(conf)  # valid: no error
    conf.write_text(router.render(table).replace("worker_processes 1;", "worker_processes x;"))
    with pytest.raises(RouterError, match="worker_processes"):
        runner.check(conf)
    leftovers = docker_engine.client.containers.list(
        all=True, filters={"label": "workbench.role=router-check"}
    )
    assert leftovers == []  # the throwaway containers are gone
