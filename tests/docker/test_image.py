"""The workbench image: tini as PID 1, non-root, sshd with keys only, JupyterLab with a token."""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
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
def lab(docker_engine: DockerEngine, served_repo: Path) -> Iterator[Lab]:
    """The image in its default mode, on loopback ports, with a token, an SSH key and the
    demo ``digits`` model mounted read-only at /models."""
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
            "SSH_AUTHORIZED_KEYS": _authorized(key),
        },
        volumes={str(served_repo): {"bind": "/models", "mode": "ro"}},
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


def _authorized(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()} test@workbench"


def _new_key() -> paramiko.Ed25519Key:
    return paramiko.Ed25519Key.from_private_key(io.StringIO(_new_private_key()))


def _ssh(lab: Lab, **kwargs: Any) -> paramiko.SSHClient:
    return _ssh_to(lab.container, lab.ssh_port, **kwargs)


def _ssh_to(container: Any, port: int, **kwargs: Any) -> paramiko.SSHClient:
    """An SSH client that knows the container's host key (unknown keys are rejected)."""
    client = paramiko.SSHClient()
    host_key = _exec(container, "cat", "/home/workbench/.ssh/host_keys/ssh_host_ed25519_key.pub")
    key_type, key_b64 = host_key.split()[:2]
    client.get_host_keys().add(f"[127.0.0.1]:{port}", key_type,
                               paramiko.Ed25519Key(data=base64.b64decode(key_b64)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect("127.0.0.1", port=port, allow_agent=False, look_for_keys=False,
                   timeout=10, banner_timeout=10, auth_timeout=10, **kwargs)
    return client


def _run_over_ssh(client: paramiko.SSHClient, command: str) -> str:
    """Run ``command`` in an SSH session; its stdout (fails on a non-zero exit)."""
    _, stdout, stderr = client.exec_command(command, timeout=120)
    out = stdout.read().decode()
    status = stdout.channel.recv_exit_status()
    assert status == 0, f"{command!r} exited {status}:\n{out}\n{stderr.read().decode()}"
    return out


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


def test_workbench_models_list_in_an_ssh_session(lab: Lab) -> None:
    client = _ssh(lab, username="workbench", pkey=lab.key)
    try:
        out = _run_over_ssh(client, "workbench models list")
    finally:
        client.close()
    assert "models in /models" in out
    assert re.search(r"digits\s.*1\.0\.0\s.*stable", out), out
    for version in ("1.1.0", "1.2.0"):
        assert version in out


def _put_file(container: Any, path: str, data: bytes) -> None:
    """Copy ``data`` to ``path`` in the container, owned by the image's user."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(path.rsplit("/", 1)[1])
        info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o644, 1000, 100, time.time()
        tar.addfile(info, io.BytesIO(data))
    assert container.put_archive(path.rsplit("/", 1)[0], buffer.getvalue())


def test_a_notebook_in_the_container_has_paddle_magics_without_load_ext(lab: Lab) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = new_notebook(cells=[
        new_code_cell("%paddle list digits"),
        new_code_cell("v = %paddle load digits@stable --quiet\nprint('loaded', v.model, v.version, v.device)"),
        new_code_cell("import sys\nprint('extension', 'workbench_ext' in sys.modules)"),
    ])
    _put_file(lab.container, "/home/workbench/magics.ipynb", nbformat.writes(notebook).encode())
    result = lab.container.exec_run(
        ["jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=300", "--output", "magics-run.ipynb", "magics.ipynb"],
        workdir="/home/workbench",
    )
    assert result.exit_code == 0, result.output.decode(errors="replace")[-3000:]
    executed = nbformat.reads(_exec(lab.container, "cat", "/home/workbench/magics-run.ipynb"), as_version=4)
    outputs = [cell.get("outputs", []) for cell in executed.cells]
    assert not any(o["output_type"] == "error" for cell in outputs for o in cell)
    assert "1.2.0" in json.dumps(outputs[0])  # the versions table
    printed = ["".join(o.get("text", "") for o in cell if o["output_type"] == "stream") for cell in outputs]
    assert printed[1].strip() == "loaded digits 1.0.0 cpu"
    assert printed[2].strip() == "extension True"


def test_authorized_keys_follow_the_variable_at_every_start(
    docker_engine: DockerEngine, containers: Containers
) -> None:
    """A persistent home keeps no key that was removed from SSH_AUTHORIZED_KEYS."""
    volume = docker_engine.client.volumes.create(name=f"workbench-home-{uuid.uuid4().hex[:8]}")
    first, second = _new_key(), _new_key()

    def start(keys: str | None) -> tuple[Any, int]:
        port = free_port()
        environment = {"SSH_PORT": str(port), "WORKBENCH_LISTEN": "127.0.0.1"}
        if keys is not None:
            environment["SSH_AUTHORIZED_KEYS"] = keys
        container = containers.run(
            ["sshd"], environment=environment,
            volumes={volume.name: {"bind": "/home/workbench", "mode": "rw"}},
        )
        wait_until(lambda: accepts("127.0.0.1", port), timeout=60, what="sshd")
        return container, port

    def logs_in(container: Any, port: int, key: paramiko.PKey) -> bool:
        try:
            _ssh_to(container, port, username="workbench", pkey=key).close()
        except paramiko.AuthenticationException:
            return False
        return True

    try:
        container, port = start(f"{_authorized(first)}\n{_authorized(second)}")
        assert logs_in(container, port, first) and logs_in(container, port, second)
        container.remove(force=True)

        container, port = start(_authorized(second))  # the first key is withdrawn
        assert not logs_in(container, port, first)
        assert logs_in(container, port, second)
        assert _exec(container, "stat", "-c", "%a %U", "/home/workbench/.ssh/authorized_keys") == "600 workbench"
        container.remove(force=True)

        container, port = start(None)  # no keys at all
        assert not logs_in(container, port, second)
        container.remove(force=True)
    finally:
        containers.cleanup()
        volume.remove(force=True)


def test_lab_started_as_root_runs_as_the_user(containers: Containers) -> None:
    port, token = free_port(), secrets.token_hex(16)
    container = containers.run(
        user="root",
        environment={"JUPYTER_PORT": str(port), "WORKBENCH_LISTEN": "127.0.0.1",
                     "WORKBENCH_SSHD": "off", "JUPYTER_TOKEN": token},
    )
    url = f"http://127.0.0.1:{port}/api"
    wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, timeout=120, interval=0.5,
               ignore=(httpx.HTTPError,), what="JupyterLab")
    processes = [line.split(None, 1) for line in _exec(container, "ps", "-eo", "uid=,args=").splitlines()]
    lab = [(uid, args) for uid, args in processes if "jupyter-lab" in args or "jupyter lab" in args]
    assert lab and all(uid == "1000" for uid, _ in lab), processes
    assert "JupyterLab runs as workbench instead (never as root)" in container.logs().decode()
