"""Blue/green deployments of serving instances behind an nginx router.

The public API (shared by the CLI and the notebook extension)::

    from workbench.deploy import DeploymentManager
    web = DeploymentManager().create("web", "digits", "1.0.0")
    web.update("1.1.0"); web.promote(); web.rollback()
    steer(web, "promote")  # what a person's promote does: during a canary, skip a step
    # deploy update's canary options, parsed, and the files they name checked against 1.2.0
    spec = check_canary_files(web, update_spec("canary", labelled="pages/"), "1.2.0")

Submodules are imported lazily, so ``import workbench.deploy`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench._lazy import lazy_attributes

if TYPE_CHECKING:
    from workbench.deploy.canary import active as canary_active
    from workbench.deploy.canary import check_files as check_canary_files
    from workbench.deploy.canary import command as canary_command
    from workbench.deploy.canary import controller as canary_controller
    from workbench.deploy.canary import run as run_canary
    from workbench.deploy.canary import serve_args as canary_serve_args
    from workbench.deploy.canary import steer, update_spec
    from workbench.deploy.client import ServingClient
    from workbench.deploy.deployment import Deployment
    from workbench.deploy.events import DeployEvent
    from workbench.deploy.history import HistoryEntry
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.platforms import get_backend
    from workbench.deploy.platforms.process.backend import ProcessBackend
    from workbench.deploy.rollout.analysis import AnalysisSpec
    from workbench.deploy.rollout.decisions import Action, CanaryStatus
    from workbench.deploy.rollout.phases import DEFAULT_MIN_AGREEMENT, Phase, verification_threshold
    from workbench.deploy.state import DeploymentState, StateStore
    from workbench.deploy.status import DeploymentStatus, InstanceStatus
    from workbench.deploy.traffic import TrafficSampler

__all__ = [
    "DEFAULT_MIN_AGREEMENT",
    "Action",
    "AnalysisSpec",
    "CanaryStatus",
    "DeployEvent",
    "Deployment",
    "DeploymentManager",
    "DeploymentState",
    "DeploymentStatus",
    "HistoryEntry",
    "InstanceStatus",
    "Phase",
    "ProcessBackend",
    "ServingClient",
    "StateStore",
    "TrafficSampler",
    "canary_active",
    "canary_command",
    "canary_controller",
    "canary_serve_args",
    "check_canary_files",
    "get_backend",
    "run_canary",
    "steer",
    "update_spec",
    "verification_threshold",
]

_WHERE = {
    "Action": "rollout.decisions",
    "AnalysisSpec": "rollout.analysis",
    "CanaryStatus": "rollout.decisions",
    "DEFAULT_MIN_AGREEMENT": "rollout.phases",
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
    "ServingClient": "client",
    "TrafficSampler": "traffic",
    "canary_active": "canary:active",
    "canary_controller": "canary:controller",
    "canary_serve_args": "canary:serve_args",
    "check_canary_files": "canary:check_files",
    "get_backend": "platforms",
    "run_canary": "canary:run",
    "canary_command": "canary:command",
    "verification_threshold": "rollout.phases",
    "steer": "canary",
    "update_spec": "canary",
}


__getattr__ = lazy_attributes(__name__, _WHERE)
