"""Fixtures for tests against a real Docker engine, its images, and a real sshd.

- ``docker_engine`` (session): a private dockerd and the test image. Uses the one
  ``.ci/docker-setup.sh`` started when ``WORKBENCH_TEST_DOCKER_HOST`` and
  ``WORKBENCH_TEST_IMAGE`` are set; otherwise runs that script (root, dockerd and
  debootstrap needed; the images are cached, so only the first run is slow).
- ``containers``: a tracker that removes every container a test made or named.
- ``ssh_docker_host`` (module): a local sshd on a loopback port with a generated
  key pair, whose sessions reach the private engine (``DOCKER_HOST`` via SetEnv),
  so ``docker system dial-stdio`` over SSH works.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests._components import require
from tests._wait import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / ".ci" / "docker-setup.sh"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class DockerEngine:
    """The private engine the tests use."""

    host: str  # unix:///... socket
    image: str  # the workbench image built on the test base
    base_image: str
    client: Any  # docker.DockerClient


def _setup_env() -> dict[str, str]:
    """Where the engine and the images are: from .ci/docker-setup.sh, else the environment.

    The script runs whenever it can (as root, with dockerd and debootstrap): when
    nothing changed it only checks hashes (well under a second), and otherwise it
    rebuilds the image, so the tests never run yesterday's code in a container.
    """
    names = ("WORKBENCH_TEST_DOCKER_HOST", "WORKBENCH_TEST_IMAGE", "WORKBENCH_TEST_BASE_IMAGE")
    can_build = (
        os.geteuid() == 0
        and all(shutil.which(tool) for tool in ("dockerd", "docker", "debootstrap"))
    )
    if not can_build and all(os.environ.get(n) for n in names[:2]):
        return {n: os.environ.get(n, "") for n in names}
    require(
        "dockerd",
        can_build,
        "run `eval \"$(bash .ci/docker-setup.sh)\"` first (as root, with docker.io and "
        "debootstrap installed), or set WORKBENCH_TEST_DOCKER_HOST and WORKBENCH_TEST_IMAGE",
    )
    proc = subprocess.run(
        ["bash", str(SETUP)], capture_output=True, text=True, timeout=1500, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f".ci/docker-setup.sh failed:\n{proc.stderr[-4000:]}", pytrace=False)
    env = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, value = line.removeprefix("export ").split("=", 1)
            env[name] = value
    return env


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The private Docker engine and the test image (built or reused)."""
    import docker

    env = _setup_env()
    host = env["WORKBENCH_TEST_DOCKER_HOST"]
    client = docker.DockerClient(base_url=host, timeout=120)
    try:
        client.ping()
    except Exception as exc:
        require("dockerd", False, f"the engine at {host} does not answer: {exc}")
    image = env["WORKBENCH_TEST_IMAGE"]
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"test image {image} is missing on {host}", pytrace=False)
    yield DockerEngine(
        host=host,
        image=image,
        base_image=env.get("WORKBENCH_TEST_BASE_IMAGE", ""),
        client=client,
    )
    client.close()


@pytest.fixture(scope="session")
def served_repo(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo ``digits`` model, readable by the image's non-root user (uid 1000).

    A copy with ``a+rX``: the repository may belong to another user (root in CI)
    and be private to it, and the serving container reads it as uid 1000.
    """
    target = tmp_path_factory.mktemp("served") / "repo"
    shutil.copytree(demo_repo / "digits", target / "digits")
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    target.parent.chmod(0o755)
    return target


@dataclass
class Containers:
    """Tracks containers (and deployments) of one test; ``cleanup`` removes them all."""

    client: Any
    image: str
    ids: list[str] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)

    def run(self, command: list[str] | None = None, **kwargs: Any) -> Any:
        """Start a detached container of the test image (host network) and track it."""
        kwargs.setdefault("network_mode", "host")
        kwargs.setdefault("detach", True)
        container = self.client.containers.run(kwargs.pop("image", self.image), command, **kwargs)
        self.ids.append(container.id)
        return container

    def deployment(self, prefix: str = "t") -> str:
        """A fresh deployment name whose containers are removed after the test."""
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.deployments.append(name)
        return name

    def of(self, deployment: str) -> list[Any]:
        return list(
            self.client.containers.list(
                all=True, filters={"label": f"workbench.deployment={deployment}"}
            )
        )

    def cleanup(self) -> None:
        import docker

        found = {c.id: c for d in self.deployments for c in self.of(d)}
        for ref in self.ids:
            try:
                found.setdefault(ref, self.client.containers.get(ref))
            except docker.errors.NotFound:
                continue
        for container in found.values():
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture
def containers(docker_engine: DockerEngine) -> Iterator[Containers]:
    tracker = Containers(docker_engine.client, docker_engine.image)
    try:
        yield tracker
    finally:
        tracker.cleanup()


@pytest.fixture
def no_user_ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep this user's ~/.ssh (config, known_hosts, keys) and ssh-agent out of a test."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@dataclass
class SSHDockerHost:
    """A local sshd that forwards ``docker system dial-stdio`` to the private engine."""

    host: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    host_public_key: str

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )


def sshd_config(address: str, port: int, directory: Path, authorized_keys: Path,
                docker_host: str) -> str:
    """A key-only sshd on ``address:port`` (host key and pid file in ``directory``) whose
    sessions reach ``docker_host``, so ``docker system dial-stdio`` over SSH works."""
    return (
        f"Port {port}\n"
        f"ListenAddress {address}\n"
        f"HostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "StrictModes no\n"
        "UsePAM no\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        f"SetEnv DOCKER_HOST={docker_host}\n"
    )


@pytest.fixture(scope="module")
def ssh_docker_host(
    docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SSHDockerHost]:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    require("sshd", Path(sshd).exists() and bool(shutil.which("ssh-keygen")),
            "OpenSSH server is not installed (apt-get install openssh-server)")
    require("docker CLI", bool(shutil.which("docker")),
            "the docker CLI runs `docker system dial-stdio` for SSH sessions")
    d = tmp_path_factory.mktemp("sshd")
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        sshd_config("127.0.0.1", port, d, d / "authorized_keys", docker_engine.host)
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    log = (d / "sshd.log").open("wb")
    proc = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: proc.poll() is not None or accepts("127.0.0.1", port), timeout=15,
                   what="sshd to listen")
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()}", pytrace=False)
        key_type, key_b64 = (d / "host_key.pub").read_text().split()[:2]
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {key_type} {key_b64}\n")
        yield SSHDockerHost(
            host="127.0.0.1",
            port=port,
            user=getpass.getuser(),
            identity_file=d / "client_key",
            known_hosts=d / "known_hosts",
            host_public_key=f"{key_type} {key_b64}",
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
