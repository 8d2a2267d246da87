"""Which API versions a cluster serves, so the objects the workbench writes fit it.

Helm's ``.Capabilities.APIVersions`` for the workbench: the renderer writes the newest
versions (``autoscaling/v2``, ``policy/v1``, ``gateway.networking.k8s.io/v1``) and
:meth:`ApiVersions.fit` rewrites an object's ``apiVersion`` to the one the cluster
serves. The choice comes from the cluster's discovery (``/api`` and ``/apis``,
:meth:`ApiVersions.from_served`) for the backend and for an export made with a
kubeconfig, or from a Kubernetes release (:meth:`ApiVersions.for_release`) for an
export made offline (``--kube-version 1.20``).

The older versions kept here carry the same fields the workbench writes: an HPA's
``metrics[].resource.target.averageUtilization`` is the same in ``autoscaling/v2beta2``
(served 1.12 to 1.25) and ``v2`` (1.23+); a PDB's ``maxUnavailable`` and ``selector``
the same in ``policy/v1beta1`` (to 1.24) and ``v1`` (1.21+); an HTTPRoute's
``parentRefs``, ``hostnames``, ``matches`` and weighted ``backendRefs`` the same in
the Gateway API's ``v1beta1`` and ``v1`` (the CRDs' served versions decide, not the
Kubernetes release).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.errors import DeployValueError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["PREFERENCES", "ApiVersions"]

#: For each kind the workbench writes in more than one version: the versions it can
#: write, newest (preferred) first.
PREFERENCES: dict[str, tuple[str, ...]] = {
    "HorizontalPodAutoscaler": ("autoscaling/v2", "autoscaling/v2beta2"),
    "PodDisruptionBudget": ("policy/v1", "policy/v1beta1"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"),
}

#: The first Kubernetes minor release serving each version, for an offline export.
_SINCE: dict[str, int] = {"autoscaling/v2": 23, "autoscaling/v2beta2": 12,
                          "policy/v1": 21, "policy/v1beta1": 5}


@dataclass(frozen=True)
class ApiVersions:
    """The ``apiVersion`` the workbench writes for each kind that has several."""

    hpa: str = PREFERENCES["HorizontalPodAutoscaler"][0]
    pdb: str = PREFERENCES["PodDisruptionBudget"][0]
    http_route: str = PREFERENCES["HTTPRoute"][0]
    #: Where the choice came from, for messages: "discovery", "Kubernetes 1.20", "default".
    source: str = "default"

    def __post_init__(self) -> None:
        for kind, value in (("HorizontalPodAutoscaler", self.hpa), ("PodDisruptionBudget", self.pdb),
                            ("HTTPRoute", self.http_route)):
            if value not in PREFERENCES[kind]:
                raise DeployValueError(f"{kind} cannot be written as {value!r}; "
                                       f"one of {', '.join(PREFERENCES[kind])}")

    def of(self, kind: str) -> str:
        """The ``apiVersion`` of ``kind`` (only the kinds in :data:`PREFERENCES`)."""
        return {"HorizontalPodAutoscaler": self.hpa, "PodDisruptionBudget": self.pdb,
                "HTTPRoute": self.http_route}[kind]

    def fit(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` with the ``apiVersion`` chosen for its kind (other kinds unchanged)."""
        kind = obj.get("kind")
        if kind not in PREFERENCES or obj.get("apiVersion") not in PREFERENCES[kind]:
            return obj
        return {**obj, "apiVersion": self.of(kind)}

    @classmethod
    def from_served(cls, served: Iterable[str], *, source: str = "discovery") -> ApiVersions:
        """The newest version of each kind among the group/versions a cluster serves
        (``autoscaling/v2``, ...). An HPA or PDB version is required; the HTTPRoute keeps
        its newest version when no Gateway API CRD is installed (the router says so
        when it needs one)."""
        served = set(served)
        chosen: dict[str, str] = {}
        for kind, versions in PREFERENCES.items():
            found = next((v for v in versions if v in served), None)
            if found is None and kind != "HTTPRoute":
                raise DeployValueError(
                    f"the cluster serves none of {', '.join(versions)} for {kind}; "
                    "the workbench needs Kubernetes 1.19 or newer")
            chosen[kind] = found or versions[0]
        return cls(chosen["HorizontalPodAutoscaler"], chosen["PodDisruptionBudget"],
                   chosen["HTTPRoute"], source=source)

    @classmethod
    def for_release(cls, release: str, *, gateway: str | None = None) -> ApiVersions:
        """The versions a Kubernetes release serves (``"1.20"``, ``"v1.20.2"``) for an
        offline export; ``gateway``: the HTTPRoute's version (default the newest)."""
        match = re.fullmatch(r"v?1\.(\d+)(?:\.\d+)?", release.strip())
        if match is None:
            raise DeployValueError(f"a Kubernetes version looks like 1.20 or v1.20.2, not {release!r}")
        minor = int(match[1])
        if minor < 19:
            raise DeployValueError(f"Kubernetes {release} is too old; the workbench needs 1.19 or newer")
        served = {v for v, since in _SINCE.items() if minor >= since}
        served |= {gateway or PREFERENCES["HTTPRoute"][0]}
        if gateway is not None and gateway not in PREFERENCES["HTTPRoute"]:
            raise DeployValueError(f"HTTPRoute cannot be written as {gateway!r}; "
                                   f"one of {', '.join(PREFERENCES['HTTPRoute'])}")
        return cls.from_served(served, source=f"Kubernetes 1.{minor}")
