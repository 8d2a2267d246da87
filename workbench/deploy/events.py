"""What happened to a deployment, told to whoever listens (notebook panels, logs, watchers).

Every action on a deployment ends, after its state is persisted, with one
:class:`DeployEvent` per outcome, passed to the manager's subscribers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.deploy.state import DeploymentState

__all__ = ["DeployEvent", "EventCallback", "Subscribers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployEvent:
    """Something happened to a deployment (for notebooks, logs and watchers)."""

    deployment: str
    action: str
    outcome: str
    phase: str
    message: str
    weights: Mapping[str, int] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    @classmethod
    def of(cls, state: DeploymentState, action: str, outcome: str, message: str) -> DeployEvent:
        """The event of ``action`` that left the deployment in ``state`` (its phase and weights)."""
        return cls(state.name, action, outcome, state.phase, message, dict(state.weights))


EventCallback = Callable[[DeployEvent], None]


class Subscribers:
    """The callbacks that hear every event; one that raises is logged, never propagated."""

    def __init__(self) -> None:
        self._callbacks: list[EventCallback] = []

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(DeployEvent)`` on every event; returns an unsubscribe function."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def emit(self, event: DeployEvent) -> None:
        log.info(
            "%s: %s %s (%s) %s", event.deployment, event.action, event.outcome, event.phase,
            event.message,
        )
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break a rollback
                log.exception("deploy event subscriber %r failed", callback)
