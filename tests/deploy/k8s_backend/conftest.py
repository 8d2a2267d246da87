"""Fixtures: an in-memory Kubernetes API emulator on loopback and a client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kubernetes")

from tests.deploy.k8s_backend.emulator import Emulator
from workbench.deploy.k8s.client import KubeApi


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
