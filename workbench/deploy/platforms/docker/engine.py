"""Connecting to a Docker engine, local or over SSH, and translating its errors.

:func:`connect` returns a ``docker.DockerClient`` that answered a ping, or raises
:class:`~workbench.errors.BackendError` saying why not. ``ssh://user@host[:port]``
engines are reached through paramiko (docker-py's own SSH transport, which runs
``docker system dial-stdio`` on the remote host), made strict: a host key that is
not in ``known_hosts`` is refused with :class:`UnknownHostKeyError`, which names
the key's fingerprint and the command that adds it, never added silently.

:func:`translate` maps the SDK's, requests' and paramiko's exceptions to
BackendError at the seam (``docker.errors.NotFound`` passes through, for callers
that treat "gone" as an answer).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.deploy.fleet import describe, is_local
from workbench.errors import BackendError, MissingDependencyError, WorkbenchError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from workbench._types import StrPath

__all__ = [
    "DEFAULT_IMAGE",
    "UnknownHostKeyError",
    "connect",
    "default_image",
    "describe",
    "is_local",
    "translate",
]

logger = logging.getLogger(__name__)


def sdk() -> Any:
    """The Docker SDK module (imported on first use), or MissingDependencyError."""
    try:
        import docker
    except ImportError as exc:
        raise MissingDependencyError("docker") from exc  # a core dependency: no extra
    return docker


DEFAULT_IMAGE = "paddle-workbench:latest"


def default_image() -> str:
    """The image serving instances and the router run: ``$WORKBENCH_IMAGE`` or the default."""
    return os.environ.get("WORKBENCH_IMAGE") or DEFAULT_IMAGE


class UnknownHostKeyError(BackendError):
    """The SSH server's host key is not in known_hosts, so the connection was refused."""

    def __init__(self, hostname: str, key_type: str, fingerprint: str) -> None:
        host, port = hostname, "22"
        if hostname.startswith("[") and "]:" in hostname:
            host, port = hostname[1:].split("]:", 1)
        keyscan = "ssh-keyscan " + (f"-p {port} " if port != "22" else "") + host
        super().__init__(
            f"refusing to connect to the Docker host {hostname}: its SSH host key "
            f"({key_type} {fingerprint}) is not in known_hosts. If that is the server's "
            f"fingerprint, add its key and retry:\n    {keyscan} >> ~/.ssh/known_hosts\n"
            "(or log in once with `ssh` and accept it, or pass known_hosts=FILE)"
        )
        self.hostname = hostname
        self.fingerprint = fingerprint


def _unreachable(where: str, exc: BaseException) -> str:
    reason = str(exc) or type(exc).__name__
    kind = type(exc).__name__
    if kind == "AuthenticationException" or kind == "BadAuthenticationType":
        return (
            f"cannot log in to the Docker host {where} over SSH: {reason} (check the user "
            "name, the identity file, and the remote user's authorized_keys)"
        )
    if kind == "BadHostKeyException":
        return (
            f"refusing to connect to the Docker host {where}: its SSH host key changed "
            f"({reason}). If the change is expected, remove the old key with "
            "`ssh-keygen -R HOST` and add the new one"
        )
    return (
        f"cannot reach the Docker engine at {where}: {reason}. Is dockerd running, and "
        "is DOCKER_HOST (or docker_host=...) right?"
    )


def _api_error_text(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc)


@contextlib.contextmanager
def translate(what: str, where: str) -> Iterator[None]:
    """Turn engine and transport errors raised inside into BackendError("what: why").

    ``docker.errors.NotFound`` (and ImageNotFound) pass through unchanged.
    """
    docker = sdk()
    transport: tuple[type[BaseException], ...] = (docker.errors.DockerException, OSError)
    with contextlib.suppress(ImportError):
        import paramiko

        transport = (*transport, paramiko.SSHException)
    try:
        yield
    except (WorkbenchError, docker.errors.NotFound):
        raise
    except docker.errors.APIError as exc:
        raise BackendError(f"{what}: the Docker engine said: {_api_error_text(exc)}") from exc
    except transport as exc:
        raise BackendError(f"{what}: {_unreachable(where, exc)}") from exc


def _fingerprint(key: Any) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _strict_ssh_adapter() -> type:
    """docker-py's paramiko transport, strict about host keys.

    docker-py 7 rejects unknown keys too, but reads only ``~/.ssh/known_hosts`` and
    raises a bare paramiko error (older releases only warned). This subclass always
    refuses with :class:`UnknownHostKeyError`, and takes an extra known_hosts file,
    an identity file and a connect timeout.
    """
    import paramiko
    from docker.transport import SSHHTTPAdapter

    class Refused(paramiko.SSHException):
        def __init__(self, error: UnknownHostKeyError) -> None:
            super().__init__(str(error))
            self.error = error

    class RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise Refused(UnknownHostKeyError(hostname, key.get_name(), _fingerprint(key)))

    class StrictSSHAdapter(SSHHTTPAdapter):  # type: ignore[misc]
        def __init__(
            self,
            base_url: str,
            *,
            known_hosts: str | None,
            identity_file: str | None,
            connect_timeout: float,
            **kwargs: Any,
        ) -> None:
            self._known_hosts = known_hosts
            self._identity_file = identity_file
            self._connect_timeout = connect_timeout
            super().__init__(base_url, **kwargs)

        def _create_paramiko_client(self, base_url: str) -> None:
            super()._create_paramiko_client(base_url)  # ~/.ssh/config, ~/.ssh/known_hosts
            if self._known_hosts:
                self.ssh_client.load_host_keys(self._known_hosts)
            self.ssh_client.set_missing_host_key_policy(RefuseUnknownHostKey())
            if self._identity_file:
                self.ssh_params["key_filename"] = self._identity_file
            for name in ("timeout", "banner_timeout", "auth_timeout"):
                self.ssh_params[name] = self._connect_timeout

        def _connect(self) -> None:
            try:
                super()._connect()
            except Refused as exc:
                raise exc.error from None

        def get_connection(self, url: str, proxies: Any = None) -> Any:
            # docker-py keeps a pool per request URL, each holding its own SSH channel,
            # and sshd allows 10 sessions per connection (MaxSessions): one pool for
            # all URLs reuses channels, so only concurrent requests open more.
            return super().get_connection("http+docker://ssh", proxies)

    return StrictSSHAdapter


def _ssh_client(
    url: str, *, known_hosts: str | None, identity_file: str | None, timeout: float
) -> Any:
    docker = sdk()
    parts = urllib.parse.urlsplit(url)
    if parts.port is None:
        # without a port docker-py dials port 0 when ~/.ssh/config names none: say 22
        url = parts._replace(netloc=f"{parts.netloc}:22").geturl()
    adapter = _strict_ssh_adapter()(
        url,
        known_hosts=known_hosts,
        identity_file=identity_file,
        connect_timeout=min(timeout, 30.0),
        timeout=timeout,
    )
    # An APIClient whose requests go through our adapter: made without contacting an
    # engine (a fixed API version, a placeholder URL), then given the adapter where
    # docker-py mounts its own SSH adapter, then the version is negotiated over SSH.
    api = docker.APIClient(base_url="tcp://127.0.0.1:9", version="1.41", timeout=timeout)
    api.mount("http+docker://ssh", adapter)
    api._custom_adapter = adapter
    api.base_url = "http+docker://ssh"
    api._version = api._retrieve_server_version()
    client = docker.DockerClient.__new__(docker.DockerClient)
    client.api = api
    return client


def connect(
    docker_host: str | None = None,
    *,
    known_hosts: StrPath | None = None,
    identity_file: StrPath | None = None,
    timeout: float = 60.0,
) -> Any:
    """A ``docker.DockerClient`` that answered a ping, or BackendError saying why not.

    ``docker_host``: ``unix://...``, ``tcp://...`` or ``ssh://user@host[:port]``;
    None reads the environment (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``...) like the
    docker CLI. An SSH host must be in ``~/.ssh/known_hosts`` or ``known_hosts``.
    """
    docker = sdk()
    where = describe(docker_host)
    url = docker_host or os.environ.get("DOCKER_HOST") or ""
    with translate("cannot connect", where):
        try:
            if url.startswith("ssh://"):
                client = _ssh_client(
                    url,
                    known_hosts=str(Path(known_hosts).expanduser()) if known_hosts else None,
                    identity_file=str(Path(identity_file).expanduser()) if identity_file else None,
                    timeout=timeout,
                )
            elif docker_host:
                client = docker.DockerClient(base_url=docker_host, timeout=timeout)
            else:
                client = docker.from_env(timeout=timeout)
            client.ping()
        except (WorkbenchError, docker.errors.APIError):
            raise
        except Exception as exc:  # the SDK wraps transport errors in many ways
            raise BackendError(_unreachable(where, exc)) from exc
    logger.debug("connected to the Docker engine at %s", where)
    return client
