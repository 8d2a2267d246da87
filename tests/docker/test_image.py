"""The workbench image: tini as PID 1, non-root, sshd with keys only, JupyterLab with a token."""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import paramiko
import pytest

from tests._wait import wait_until
from tests.docker.conftest import accepts, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.docker.conftest import Containers, DockerEngine

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclass
class Lab:
    container: Any
    jupyter_url: str
    token: str
    ssh_port: int
    key: paramiko.Ed25519Key


def _exec(container: Any, *command: str) -> str:
    result = container.exec_run(list(command))
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return str(result.output.decode().strip())


@pytest.fixture(scope="module")
def lab(docker_engine: DockerEngine) -> Iterator[Lab]:
    """The image in its default mode, on loopback ports, with a token and an SSH key."""
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(_new_private_key()))
    token = secrets.token_hex(16)
    jupyter_port, ssh_port = free_port(), free_port()
    container = docker_engine.client.containers.run(
        docker_engine.image,
        detach=True,
        network_mode="host",
        labels={"test": "lab"},
        environment={
            "JUPYTER_PORT": str(jupyter_port),
            "SSH_PORT": str(ssh_port),
            "WORKBENCH_LISTEN": "127.0.0.1",
            "JUPYTER_TOKEN": token,
            "SSH_AUTHORIZED_KEYS": f"{key.get_name()} {key.get_base64()} test@workbench",
        },
    )
    url = f"http://127.0.0.1:{jupyter_port}"
    try:
        def up() -> bool:
            container.reload()
            if container.status != "running":
                pytest.fail(f"lab container exited:\n{container.logs().decode()}", pytrace=False)
            return (
                httpx.get(f"{url}/api", timeout=2).status_code == 200
                and accepts("127.0.0.1", ssh_port)
            )

        wait_until(up, timeout=120, interval=0.5, what="JupyterLab and sshd",
                   ignore=(httpx.HTTPError,))
        yield Lab(container, url, token, ssh_port, key)
    finally:
        container.remove(force=True)


def _new_private_key() -> str:
    """An Ed25519 private key in OpenSSH format (what paramiko reads)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def _ssh(lab: Lab, **kwargs: Any) -> paramiko.SSHClient:
    """An SSH client that knows the container's host key (unknown keys are rejected)."""
    client = paramiko.SSHClient()
    host_key = _exec(lab.container, "cat", "/home/workbench/.ssh/host_keys/ssh_host_ed25519_key.pub")
    key_type, key_b64 = host_key.split()[:2]
    client.get_host_keys().add(f"[127.0.0.1]:{lab.ssh_port}", key_type,
                               paramiko.Ed25519Key(data=__import__("base64").b64decode(key_b64)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect("127.0.0.1", port=lab.ssh_port, allow_agent=False, look_for_keys=False,
                   timeout=10, banner_timeout=10, auth_timeout=10, **kwargs)
    return client


def test_tini_is_pid_1_and_the_user_is_not_root(lab: Lab, docker_engine: DockerEngine) -> None:
    assert _exec(lab.container, "cat", "/proc/1/comm") == "tini"
    assert _exec(lab.container, "id", "-un") == "workbench"
    assert _exec(lab.container, "id", "-u") == "1000"
    config = docker_engine.client.images.get(docker_engine.image).attrs["Config"]
    assert config["User"] not in ("", "0", "root")
    assert config["Entrypoint"][0] == "tini"
    assert set(config["ExposedPorts"]) == {"8888/tcp", "2222/tcp", "8000/tcp", "8080/tcp"}
    assert "workbench.health" in " ".join(config["Healthcheck"]["Test"])


def test_jupyterlab_needs_the_token(lab: Lab) -> None:
    with httpx.Client(base_url=lab.jupyter_url, timeout=10) as http:
        assert http.get("/api/contents").status_code == 403
        assert http.get("/api/contents", headers={"Authorization": "token wrong"}).status_code == 403
        login = http.get("/lab")
        assert login.status_code == 302 and "/login" in login.headers["location"]
        assert http.get("/api/contents", headers={"Authorization": f"token {lab.token}"}).status_code == 200
        assert http.get("/lab", params={"token": lab.token}).status_code == 200


def test_healthcheck_and_kernel_extension_config(lab: Lab) -> None:
    result = lab.container.exec_run(["python", "-m", "workbench.health"])
    assert result.exit_code == 0, result.output
    assert result.output.decode().startswith("healthy: http://127.0.0.1:")
    assert "ipython_kernel_config.py" in _exec(lab.container, "ls", "/etc/ipython")
    assert _exec(lab.container, "python", "-c", "import workbench_ext, workbench; print('ok')") == "ok"


def test_sshd_logs_in_with_the_key_only(lab: Lab) -> None:
    client = _ssh(lab, username="workbench", pkey=lab.key)
    try:
        _, stdout, _ = client.exec_command("id -un; echo $WORKBENCH_REPO; command -v workbench")
        assert stdout.read().decode().split() == ["workbench", "/models", "/opt/workbench/bin/workbench"]
    finally:
        client.close()
    with pytest.raises(paramiko.AuthenticationException):
        _ssh(lab, username="workbench", password="workbench")
    with pytest.raises(paramiko.AuthenticationException):
        _ssh(lab, username="root", pkey=lab.key)
    other = paramiko.Ed25519Key.from_private_key(io.StringIO(_new_private_key()))
    with pytest.raises(paramiko.AuthenticationException):
        _ssh(lab, username="workbench", pkey=other)


def test_sshd_config_is_key_only_on_2222(lab: Lab) -> None:
    effective = _exec(
        lab.container, "/usr/sbin/sshd", "-T", "-f", "/etc/workbench/sshd_config",
        "-h", "/home/workbench/.ssh/host_keys/ssh_host_ed25519_key",
    )
    settings = dict(line.split(" ", 1) for line in effective.splitlines() if " " in line)
    assert settings["port"] == "2222"
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["permitrootlogin"] == "no"
    assert settings["authenticationmethods"] == "publickey"


def test_generated_token_is_printed_and_required(containers: Containers) -> None:
    port = free_port()
    container = containers.run(
        environment={"JUPYTER_PORT": str(port), "WORKBENCH_LISTEN": "127.0.0.1",
                     "WORKBENCH_SSHD": "off"},
    )

    def token() -> str | None:
        match = re.search(r"JupyterLab token \(generated\): ([0-9a-f]{48})", container.logs().decode())
        return match.group(1) if match else None

    generated = wait_until(token, timeout=60, what="the generated token in the logs")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/api", timeout=2).status_code == 200, timeout=120,
               interval=0.5, ignore=(httpx.HTTPError,), what="JupyterLab")
    assert httpx.get(f"{url}/api/contents", timeout=10).status_code == 403
    ok = httpx.get(f"{url}/api/contents", headers={"Authorization": f"token {generated}"}, timeout=10)
    assert ok.status_code == 200
