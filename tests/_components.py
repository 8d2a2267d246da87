"""Skip-or-fail for tests that need a system component.

On a laptop without nginx, dockerd, sshd or Chromium the test skips and says why.
Under ``CI=true`` the component is part of the contract, so its absence fails.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(component: str, available: bool, why: str = "") -> None:
    """Skip (or, under CI=true, fail) unless ``component`` is available."""
    if available:
        return
    message = f"{component} is not available" + (f": {why}" if why else "")
    if in_ci():
        pytest.fail(f"{message} (CI=true requires it)", pytrace=False)
    pytest.skip(message)
