"""DockerBackend on an ``ssh://`` engine: a local sshd whose sessions reach the private dockerd."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.docker.conftest import free_port
from workbench.deploy.backend import InstanceSpec
from workbench.deploy.platforms.docker.backend import DockerBackend
from workbench.deploy.platforms.docker.engine import UnknownHostKeyError
from workbench.errors import BackendError

if TYPE_CHECKING:
    from pathlib import Path

    from tests.docker.conftest import Containers, DockerEngine, SSHDockerHost

pytestmark = [pytest.mark.usefixtures("no_user_ssh_config"), pytest.mark.docker,
              pytest.mark.sshd, pytest.mark.slow]


def test_backend_over_ssh_lists_and_starts_containers(
    ssh_docker_host: SSHDockerHost,
    docker_engine: DockerEngine,
    containers: Containers,
    served_repo: Path,
) -> None:
    backend = DockerBackend(
        ssh_docker_host.url,
        image=docker_engine.image,
        known_hosts=ssh_docker_host.known_hosts,
        identity_file=ssh_docker_host.identity_file,
        start_grace=1.0,
    )
    deployment = containers.deployment()
    assert backend.find(deployment) == []
    spec = InstanceSpec(
        deployment=deployment, color="green", model="digits", version="1.1.0",
        repo=str(served_repo.resolve()), port=free_port(),
    )
    instance = backend.start(spec)
    try:
        assert backend.is_running(instance)
        (found,) = backend.find(deployment)
        assert found.ref == instance.ref and found.spec.color == "green"
        # many calls reuse SSH channels (sshd allows 10 sessions per connection)
        for _ in range(25):
            assert backend.is_running(instance) and len(backend.find(deployment)) == 1
        # the same engine, seen locally
        local = docker_engine.client.containers.get(instance.ref)
        assert local.labels["workbench.version"] == "1.1.0"
    finally:
        backend.stop(instance, timeout=5)
        backend.close()
    assert backend.find(deployment) == []


def test_unknown_host_key_is_refused_with_instructions(
    ssh_docker_host: SSHDockerHost, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    backend = DockerBackend(
        ssh_docker_host.url, known_hosts=empty, identity_file=ssh_docker_host.identity_file
    )
    with pytest.raises(UnknownHostKeyError) as info:
        backend.find("anything")
    message = str(info.value)
    assert "not in known_hosts" in message
    assert f"ssh-keyscan -p {ssh_docker_host.port} 127.0.0.1 >> ~/.ssh/known_hosts" in message
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"], input=ssh_docker_host.host_public_key,
        capture_output=True, text=True, check=True,
    ).stdout.split()[1]
    assert fingerprint in message  # so the user can compare before trusting it
    assert isinstance(info.value, BackendError)


def test_changed_host_key_is_refused(ssh_docker_host: SSHDockerHost, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    other = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh_docker_host.port} {other}\n")
    backend = DockerBackend(
        ssh_docker_host.url, known_hosts=wrong, identity_file=ssh_docker_host.identity_file
    )
    with pytest.raises(BackendError, match="host key changed"):
        backend.find("anything")


def test_wrong_key_cannot_log_in(ssh_docker_host: SSHDockerHost, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    backend = DockerBackend(
        ssh_docker_host.url, known_hosts=ssh_docker_host.known_hosts,
        identity_file=tmp_path / "k", timeout=10,
    )
    with pytest.raises(BackendError, match="cannot log in"):
        backend.find("anything")
