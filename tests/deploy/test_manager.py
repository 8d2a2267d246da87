"""Which nginx runner a deployment's router gets, and refusals before anything starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from workbench.deploy.manager import DeploymentManager, default_router
from workbench.deploy.platforms.docker.router import DockerNginx
from workbench.deploy.platforms.process.router import LocalNginx
from workbench.deploy.rollout.phases import Rollout
from workbench.deploy.state import DeploymentState
from workbench.errors import DeployError

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def _no_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)


@pytest.mark.parametrize(
    ("backend", "docker_host", "router"),
    [
        ("process", None, "process"),
        ("docker", None, "docker"),  # the local socket
        ("docker", "unix:///run/user/1000/docker.sock", "docker"),
        ("docker", "ssh://deploy@127.0.0.1:2222", "docker"),  # this machine, over SSH
        ("docker", "ssh://deploy@gpu-box", "process"),  # its paths are not ours: local nginx
        ("docker", "tcp://10.0.0.7:2376", "process"),
    ],
)
def test_the_router_runs_beside_local_docker_instances(
    backend: str, docker_host: str | None, router: str
) -> None:
    options = {"docker_host": docker_host} if docker_host else {}
    assert default_router(backend, options) == router


def state(**overrides: object) -> DeploymentState:
    args: dict[str, object] = {
        "name": "web", "model": "digits", "repo": "/repo", "port": 8080, "rollout": Rollout(),
    }
    args.update(overrides)
    return DeploymentState(**args)  # type: ignore[arg-type]


def test_the_runner_follows_the_persisted_state(tmp_path: Path) -> None:
    manager = DeploymentManager(tmp_path, repo=tmp_path)
    assert isinstance(manager.runner(None), LocalNginx)
    assert isinstance(manager.runner(state()), LocalNginx)
    options = {"docker_host": "unix:///tmp/engine.sock", "image": "wb:test", "network": "host"}
    docker = state(backend="docker", backend_options=options, router="docker")
    runner = manager.runner(docker)
    assert isinstance(runner, DockerNginx)  # made, not yet connected
    assert (runner.docker_host, runner.image) == ("unix:///tmp/engine.sock", "wb:test")
    assert manager.runner(docker) is runner  # one runner (one engine connection) per engine
    # a docker deployment from before routers had a place in the state keeps its local nginx
    assert isinstance(manager.runner(state(backend="docker", backend_options=options)), LocalNginx)


def test_create_refuses_a_docker_router_on_a_remote_engine(tmp_path: Path) -> None:
    manager = DeploymentManager(tmp_path, repo=tmp_path)
    manager.resolve_version = lambda model, ref: ref  # type: ignore[method-assign]
    with pytest.raises(DeployError, match="needs a Docker engine on this machine"):
        manager.create("web", "digits", "1.0.0", backend="docker",
                       docker_host="ssh://deploy@gpu-box", router="docker")
    with pytest.raises(DeployError, match="unknown router 'k8s'"):
        manager.create("web", "digits", "1.0.0", router="k8s")
    assert manager.names() == []
