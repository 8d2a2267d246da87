"""The deployment fixtures (stub serving instance, real nginx) for the CLI's deploy output."""

from __future__ import annotations

from tests.deploy.conftest import home, make_manager, nginx, stub_command, stub_repo

__all__ = ["home", "make_manager", "nginx", "stub_command", "stub_repo"]
