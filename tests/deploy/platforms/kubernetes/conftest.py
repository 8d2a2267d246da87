"""Fixtures: an in-memory Kubernetes API emulator on loopback and a client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kubernetes")

from tests.deploy.platforms.kubernetes.emulator import Emulator
from workbench.deploy.platforms.kubernetes.client import KubeApi


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator().start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def kubeconfig(emulator: Emulator, tmp_path: Path) -> Path:
    return emulator.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[KubeApi]:
    client = KubeApi.connect(config_file=str(kubeconfig), timeout=5.0)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_backend(kubeconfig: Path):
    """KubernetesBackend factories on the emulator (each with its progress lines)."""
    from workbench.deploy.platforms.kubernetes.backend import KubernetesBackend

    made: list[KubernetesBackend] = []

    def make(**options: object) -> KubernetesBackend:
        lines: list[str] = []
        options = {"kubeconfig": str(kubeconfig), "image": "registry.example/paddle-workbench:1",
                   "ready_timeout": 10.0, **options}
        backend = KubernetesBackend(progress=lines.append, **options)
        backend.lines = lines  # type: ignore[attr-defined]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        if backend._api is not None:
            backend._api.close()


def spec(color: str = "blue", version: str = "1.0.0", deployment: str = "web"):
    from workbench.deploy.backend import InstanceSpec

    return InstanceSpec(deployment=deployment, color=color, model="digits", version=version,  # type: ignore[arg-type]
                        repo="/models", port=9000, admin_token="s3cret")


@pytest.fixture(autouse=True)
def _no_background_reaper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests drive scale-downs themselves; the one that tests the reaper turns it on."""
    monkeypatch.setenv("WORKBENCH_K8S_REAPER", "off")
