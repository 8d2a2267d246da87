"""The process backend against the stub server: real processes on loopback ports."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import psutil
import pytest

from tests._wait import wait_until
from tests.deploy.conftest import MODES
from workbench.deploy.backend import Instance, InstanceSpec
from workbench.deploy.platforms.process.backend import ProcessBackend
from workbench.deploy.ports import free_port, port_in_use
from workbench.errors import BackendError


@pytest.fixture
def backend(tmp_path: Path, stub_command: list[str]) -> ProcessBackend:
    return ProcessBackend(tmp_path, command=stub_command, env={"WB_STUB_MODES": json.dumps(MODES)})


def spec(version: str = "1.0.0", color: str = "blue", port: int | None = None) -> InstanceSpec:
    return InstanceSpec(
        deployment="web", color=color, model="stub", version=version,  # type: ignore[arg-type]
        repo="/nowhere", port=port or free_port(),
    )


def ready(url: str) -> bool:
    return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200


def test_start_find_stop(backend: ProcessBackend, tmp_path: Path) -> None:
    instance = backend.start(spec())
    try:
        assert instance.backend == "process" and instance.ref.isdigit()
        wait_until(lambda: ready(instance.url), 10, 0.05, ignore=(httpx.HTTPError,))
        assert backend.is_running(instance)
        # the instance runs in its own session, so it outlives whoever started it
        assert psutil.Process(int(instance.ref)).pid == __import__("os").getsid(int(instance.ref))
        # a new backend object (a new shell, a restarted kernel) finds it again
        again = ProcessBackend(tmp_path).find("web")
        assert [i.ref for i in again] == [instance.ref]
        assert again[0].spec.version == "1.0.0" and again[0].spec.port == instance.spec.port
        assert "stub serving stub 1.0.0" in backend.logs(instance)
    finally:
        backend.stop(instance, timeout=5)
    assert not backend.is_running(instance)
    assert backend.find("web") == []
    assert "stub: stopped" in backend.logs(instance)  # SIGTERM drained, not killed
    backend.stop(instance)  # idempotent


def test_port_in_use_is_a_clear_error(backend: ProcessBackend) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use(port)
        with pytest.raises(BackendError, match=f"port {port} on 127.0.0.1 is in use"):
            backend.start(spec(port=port))
    assert backend.find("web") == []


def test_a_process_that_exits_during_start_is_a_clear_error(
    tmp_path: Path, stub_command: list[str]
) -> None:
    backend = ProcessBackend(tmp_path, command=stub_command, start_grace=2.0,
                             env={"WB_STUB_MODES": json.dumps(MODES)})
    with pytest.raises(BackendError, match=r"exited with code 3 during start(.|\n)*crashing"):
        backend.start(spec("1.4.0"))
    assert backend.find("web") == []


def test_a_missing_program_is_a_backend_error(tmp_path: Path) -> None:
    backend = ProcessBackend(tmp_path, command=["/nonexistent/python"])
    with pytest.raises(BackendError, match="cannot run /nonexistent/python"):
        backend.start(spec())


def test_a_reused_pid_is_not_mistaken_for_the_instance(backend: ProcessBackend) -> None:
    instance = backend.start(spec())
    try:
        impostor = Instance(instance.spec, "process", instance.ref,
                            labels={**instance.labels, "create_time": "12345.0"})
        assert backend.is_running(instance)
        assert not backend.is_running(impostor)
        backend.stop(impostor)  # must not touch the real process
        assert backend.is_running(instance)
    finally:
        backend.stop(instance, timeout=5)


def test_one_instance_per_colour(backend: ProcessBackend) -> None:
    instance = backend.start(spec())
    try:
        with pytest.raises(BackendError, match="already runs"):
            backend.start(spec())
        other = backend.start(spec(color="green"))
        assert {i.spec.color for i in backend.find("web")} == {"blue", "green"}
        backend.stop(other, timeout=5)
    finally:
        backend.stop(instance, timeout=5)


def test_get_backend_picks_by_name(tmp_path: Path) -> None:
    from workbench.deploy.platforms import get_backend

    assert isinstance(get_backend("process", home=tmp_path, docker_host=None), ProcessBackend)
    with pytest.raises(BackendError, match="unknown backend 'k8s'"):
        get_backend("k8s")
