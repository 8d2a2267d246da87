"""A deployment's canary as its state file keeps it (key ``canary``): how the canary is
judged (its :class:`~workbench.deploy.rollout.analysis.AnalysisSpec`, as a mapping),
where its metrics come from, and the controller's :class:`CanaryStatus` once it started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workbench.deploy.rollout.controller import CanaryStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CanaryState"]


@dataclass(frozen=True)
class CanaryState:
    """A deployment's canary as persisted (key ``canary``): how it is judged, where its
    metrics come from, and its controller's status once it started."""

    spec: Mapping[str, Any] = field(default_factory=dict)  # the AnalysisSpec, as its to_dict
    source: str = "scrape"  # or "prometheus"
    prometheus: str | None = None  # the Prometheus URL the metrics come from
    status: CanaryStatus | None = None  # None until the controller took its first step

    @property
    def started(self) -> bool:
        return self.status is not None

    @property
    def active(self) -> bool:
        """Started and not ended yet."""
        return self.status is not None and not self.status.done

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"spec": dict(self.spec), "source": self.source,
                                "prometheus": self.prometheus}
        if self.status is not None:
            data["status"] = self.status.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryState:
        status = data.get("status")
        prometheus = data.get("prometheus")
        return cls(
            spec=dict(data.get("spec") or {}),
            source=str(data.get("source") or "scrape"),
            prometheus=None if prometheus is None else str(prometheus),
            status=None if status is None else CanaryStatus.from_dict(status),
        )
