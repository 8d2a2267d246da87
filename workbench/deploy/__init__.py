"""Blue/green deployments of serving instances behind an nginx router.

The public API (shared by the CLI and the notebook extension)::

    from workbench.deploy import DeploymentManager
    web = DeploymentManager().create("web", "digits", "1.0.0")
    web.update("1.1.0"); web.promote(); web.rollback()
    steer(web, "promote")  # what a person's promote does: during a canary, skip a step

Submodules are imported lazily, so ``import workbench.deploy`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench._lazy import lazy_attributes

if TYPE_CHECKING:
    from workbench.deploy.canary import steer
    from workbench.deploy.deployment import Deployment
    from workbench.deploy.events import DeployEvent
    from workbench.deploy.history import HistoryEntry
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.platforms import get_backend
    from workbench.deploy.platforms.process.backend import ProcessBackend
    from workbench.deploy.rollout.phases import Phase
    from workbench.deploy.state import DeploymentState, StateStore
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
    "steer",
]

_WHERE = {
    "DeployEvent": "events",
    "Deployment": "deployment",
    "DeploymentManager": "manager",
    "DeploymentStatus": "status",
    "InstanceStatus": "status",
    "DeploymentState": "state",
    "HistoryEntry": "history",
    "StateStore": "state",
    "Phase": "rollout.phases",
    "ProcessBackend": "platforms.process.backend",
    "get_backend": "platforms",
    "steer": "canary",
}


__getattr__ = lazy_attributes(__name__, _WHERE)
