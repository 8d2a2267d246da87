"""DockerBackend against a real engine: serving containers of the test image."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests._wait import wait_until
from tests.docker.conftest import free_port
from workbench.deploy.backend import InstanceSpec
from workbench.deploy.platforms.docker.backend import MODELS_DIR, DockerBackend
from workbench.errors import BackendError

if TYPE_CHECKING:
    from tests.docker.conftest import Containers, DockerEngine

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def backend(docker_engine: DockerEngine) -> DockerBackend:
    return DockerBackend(docker_engine.host, image=docker_engine.image, start_grace=60.0)


def _spec(deployment: str, repo: Path, **kw: object) -> InstanceSpec:
    args: dict[str, object] = {
        "deployment": deployment,
        "color": "blue",
        "model": "digits",
        "version": "1.0.0",
        "repo": str(repo),
        "port": free_port(),
    }
    args.update(kw)
    return InstanceSpec(**args)  # type: ignore[arg-type]


def _sleeper(containers: Containers) -> object:
    """An unrelated container: error paths must leave it alone."""
    return containers.run(["sleep", "300"], labels={"test": "bystander"})


def test_serving_container_answers_and_is_found_again(
    backend: DockerBackend, containers: Containers, served_repo: Path
) -> None:
    deployment = containers.deployment()
    spec = _spec(deployment, served_repo, admin_token="s3cret-admin-token")
    instance = backend.start(spec)
    assert instance.backend == "docker"
    assert backend.is_running(instance)

    def ready() -> bool:
        if not backend.is_running(instance):
            pytest.fail(f"serving container exited:\n{backend.logs(instance)}")
        return httpx.get(f"{spec.url}/v2/health/ready", timeout=2).status_code == 200

    wait_until(ready, timeout=180, interval=0.5, what="the container to be ready",
               ignore=(httpx.HTTPError,))
    body = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": [0.5] * 128}]}
    response = httpx.post(f"{spec.url}/v2/models/digits/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "1.0.0"
    (output,) = response.json()["outputs"]
    assert output["shape"] == [2, 10]

    container = containers.client.containers.get(instance.ref)
    labels = container.labels
    assert labels["workbench.deployment"] == deployment
    assert labels["workbench.color"] == "blue"
    assert labels["workbench.model"] == "digits"
    assert labels["workbench.version"] == "1.0.0"
    assert "s3cret" not in str(labels)  # the token goes in the environment only
    config = container.attrs["HostConfig"]
    assert config["NetworkMode"] == "host"
    (mount,) = container.attrs["Mounts"]
    assert (mount["Source"], mount["Destination"], mount["RW"]) == (
        str(served_repo.resolve()), MODELS_DIR, False,
    )
    assert container.attrs["Config"]["Healthcheck"]["Test"][:4] == [
        "CMD", "python", "-m", "workbench.health",
    ]
    # non-root, and the repository is read-only inside
    assert container.exec_run(["id", "-u"]).output.decode().strip() != "0"
    touched = container.exec_run(["touch", f"{MODELS_DIR}/digits/x"])
    assert touched.exit_code != 0
    assert b"Read-only file system" in touched.output

    (found,) = backend.find(deployment)
    assert found.ref == instance.ref
    assert found.spec == spec.__class__(**{**spec.__dict__, "admin_token": None})
    assert backend.find("other-deployment") == []
    assert "digits" in backend.logs(instance, tail=500)

    # a second start of the same colour is refused, the first keeps running
    with pytest.raises(BackendError, match="already"):
        backend.start(_spec(deployment, served_repo))
    assert backend.is_running(instance)

    backend.stop(instance, timeout=10)
    assert not backend.is_running(instance)
    assert backend.find(deployment) == []
    assert containers.of(deployment) == []
    backend.stop(instance)  # idempotent


def test_missing_image_is_a_clear_error(
    docker_engine: DockerEngine, containers: Containers, served_repo: Path
) -> None:
    backend = DockerBackend(docker_engine.host, image="workbench-missing:nope")
    deployment = containers.deployment()
    with pytest.raises(BackendError, match=r"image 'workbench-missing:nope' is not on the Docker"):
        backend.start(_spec(deployment, served_repo))
    assert containers.of(deployment) == []


def test_port_in_use_is_refused_without_side_effects(
    backend: DockerBackend, containers: Containers, served_repo: Path
) -> None:
    bystander = _sleeper(containers)
    deployment = containers.deployment()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BackendError, match=rf"port {port} on 127.0.0.1 is already in use"):
            backend.start(_spec(deployment, served_repo, port=port))
    assert containers.of(deployment) == []
    bystander.reload()  # type: ignore[attr-defined]
    assert bystander.status == "running"  # type: ignore[attr-defined]


def test_container_exiting_at_start_reports_its_logs(
    backend: DockerBackend, containers: Containers, served_repo: Path
) -> None:
    bystander = _sleeper(containers)
    deployment = containers.deployment()
    spec = _spec(deployment, served_repo, extra_args=("--no-such-option",))
    with pytest.raises(BackendError) as info:
        backend.start(spec)
    message = str(info.value)
    assert "exited with code 2 during start" in message
    assert "no-such-option" in message  # the container's own last log lines
    assert containers.of(deployment) == []  # removed
    bystander.reload()  # type: ignore[attr-defined]
    assert bystander.status == "running"  # type: ignore[attr-defined]


def test_missing_repository_is_a_clear_error(
    backend: DockerBackend, containers: Containers, tmp_path: Path
) -> None:
    deployment = containers.deployment()
    with pytest.raises(BackendError, match="does not exist"):
        backend.start(_spec(deployment, tmp_path / "nowhere"))
    assert containers.of(deployment) == []


def test_unreachable_engine_is_a_clear_error(tmp_path: Path) -> None:
    backend = DockerBackend(f"unix://{tmp_path}/no-docker.sock", timeout=5)
    with pytest.raises(BackendError, match="cannot reach the Docker engine at unix://"):
        backend.find("anything")
    with pytest.raises(BackendError, match="cannot reach the Docker engine"):
        backend.start(_spec("anything", tmp_path))


def test_gpu_device_becomes_a_device_request(tmp_path: Path) -> None:
    backend = DockerBackend("unix:///nonexistent.sock")  # no engine needed to plan a run
    command, kwargs = backend.plan(_spec("gpu", tmp_path, device="gpu:1", port=8001))
    (request,) = kwargs["device_requests"]
    assert request["DeviceIDs"] == ["1"]
    assert request["Capabilities"] == [["gpu"]]
    assert command[:1] == ["serve"]
    assert command[command.index("--device") + 1] == "gpu:0"  # the only GPU it sees
    assert command[command.index("--repo") + 1] == MODELS_DIR
    assert kwargs["volumes"] == {str(tmp_path.resolve()): {"bind": MODELS_DIR, "mode": "ro"}}
    _, cpu = backend.plan(_spec("cpu", tmp_path, port=8001))
    assert "device_requests" not in cpu
    with pytest.raises(BackendError, match="device must be"):
        backend.plan(_spec("tpu", tmp_path, device="tpu"))
