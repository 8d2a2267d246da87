"""The Docker SDK is a core dependency: without it, the error says to install it."""

from __future__ import annotations

import sys

import pytest

from workbench.deploy.platforms.docker.engine import sdk
from workbench.errors import MissingDependencyError


def test_a_missing_docker_sdk_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` now raises ImportError
    with pytest.raises(MissingDependencyError) as info:
        sdk()
    assert str(info.value) == "docker is not installed; install it with: pip install docker"
    assert info.value.extra is None


def test_an_optional_dependency_names_its_extra() -> None:
    error = MissingDependencyError("jupyterlab", "notebook")
    assert str(error).endswith("pip install 'paddle-workbench[notebook]'")
