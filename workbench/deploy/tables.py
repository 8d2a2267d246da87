"""What a deployment's state routes: its routing table, and the instances a move stops.

Pure functions of :class:`~workbench.deploy.state.DeploymentState`, shared by the
deployment's actions, the canary and the manager's restore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.deploy.rollout.phases import Phase
from workbench.deploy.routing import RoutingTable, Upstream

if TYPE_CHECKING:
    from workbench.deploy.records import InstanceRecord
    from workbench.deploy.state import DeploymentState

__all__ = ["routing_table", "settled"]

#: Phases after which the candidate slot is emptied (its instance stopped).
SINGLE = frozenset({Phase.STABLE, Phase.STARTING, Phase.ROLLED_BACK, Phase.FAILED})
#: Phases in which the candidate has an upstream in the router.
ROUTED = frozenset({Phase.VERIFIED, Phase.CANARY, Phase.PROMOTED})


def routing_table(state: DeploymentState) -> RoutingTable:
    """The routing table ``state`` calls for."""
    # The candidate joins the router (pinnable, and backup of the stable colour)
    # only once verified: before that it must not see a single request.
    routed = {
        color: record
        for color, record in state.instances.items()
        if color == state.rollout.stable or state.rollout.phase in ROUTED
    }
    # every instance of a colour (on every engine) is one of its upstream's servers
    upstreams = tuple(
        Upstream(color=r.color, host=r.host, port=r.port, version=r.version)
        for records in routed.values()
        for r in records
    )
    green = state.rollout.weights["green"]
    if "green" not in routed:
        green = 0
    if "blue" not in routed:
        green = 100
    return RoutingTable(
        deployment=state.name,
        listen_port=state.port,
        listen_host=state.host,
        upstreams=upstreams,
        green_weight=green,
        stable=state.rollout.stable,
    )


def settled(
    before: DeploymentState, after: DeploymentState
) -> tuple[DeploymentState, list[InstanceRecord]]:
    """``after`` without the candidate a move to a single-colour phase stops, and its records."""
    phase = after.rollout.phase
    drop: list[InstanceRecord] = []
    if phase in SINGLE and phase is not before.rollout.phase:
        candidate = after.candidate
        if candidate is not None:
            drop.extend(candidate)
            after = after.without_instance(candidate.color)
    return after, drop
