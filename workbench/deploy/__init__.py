"""Blue/green deployments of serving instances behind an nginx router.

The public API (shared by the CLI and the notebook extension)::

    from workbench.deploy import DeploymentManager
    web = DeploymentManager().create("web", "digits", "1.0.0")
    web.update("1.1.0"); web.promote(); web.rollback()

Submodules are imported lazily, so ``import workbench.deploy`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.deploy.backends import get_backend
    from workbench.deploy.backends.process import ProcessBackend
    from workbench.deploy.deployment import Deployment
    from workbench.deploy.events import DeployEvent
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.rollout.phases import Phase
    from workbench.deploy.state import DeploymentState, HistoryEntry, StateStore
    from workbench.deploy.status import DeploymentStatus, InstanceStatus

__all__ = [
    "DeployEvent",
    "Deployment",
    "DeploymentManager",
    "DeploymentState",
    "DeploymentStatus",
    "HistoryEntry",
    "InstanceStatus",
    "Phase",
    "ProcessBackend",
    "StateStore",
    "get_backend",
]

_WHERE = {
    "DeployEvent": "events",
    "Deployment": "deployment",
    "DeploymentManager": "manager",
    "DeploymentStatus": "status",
    "InstanceStatus": "status",
    "DeploymentState": "state",
    "HistoryEntry": "state",
    "StateStore": "state",
    "Phase": "rollout.phases",
    "ProcessBackend": "backends.process",
    "get_backend": "backends",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench.deploy' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"workbench.deploy.{module}"), name)
