"""Is a Deployment ready, and if it never will be, why: pure reads of API objects.

:func:`rollout_progress` follows ``kubectl rollout status``: the controller must have
observed the latest spec, every replica must be updated and available, and a
``Progressing`` condition with reason ``ProgressDeadlineExceeded`` means it gave up.
:func:`pod_problems` finds the reasons a pod will not become ready without help (a
crash loop, an image that cannot be pulled, a pod that cannot be scheduled) and the
Warning events about it, so a failed candidate is reported in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["FATAL_REASONS", "Progress", "pod_problems", "rollout_progress"]

#: Container waiting reasons that do not go away by waiting.
FATAL_REASONS = frozenset({
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})


@dataclass(frozen=True)
class Progress:
    """Where a Deployment's rollout stands."""

    ready: bool
    message: str  # "2 of 3 updated replicas are available", ...
    failed: bool = False  # the controller gave up (progress deadline exceeded)


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or () if c.get("type") == kind), None)


def rollout_progress(deployment: Mapping[str, Any]) -> Progress:
    """The rollout of ``deployment`` (a Deployment object as the API returns it)."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 1)):
        return Progress(False, "waiting for the controller to see the new spec")
    progressing = _condition(status, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Progress(False, f"progress deadline exceeded: {progressing.get('message', '')}".strip(),
                        failed=True)
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    total = int(status.get("replicas", 0))
    if updated < want:
        return Progress(False, f"{updated} of {want} replicas updated")
    if total > updated:
        return Progress(False, f"{total - updated} old replicas pending termination")
    if available < updated:
        return Progress(False, f"{available} of {updated} updated replicas are available")
    return Progress(True, f"{available} of {want} replicas available")


def pod_problems(pods: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]] = ()
                 ) -> tuple[list[str], list[str]]:
    """``(fatal, warnings)`` about a Deployment's pods: reasons that will not pass by
    waiting (``pod p: CrashLoopBackOff (...)``), and the pods' recent Warning events."""
    fatal: list[str] = []
    names = set()
    for pod in pods:
        name = str((pod.get("metadata") or {}).get("name", "?"))
        names.add(name)
        status = pod.get("status") or {}
        containers = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for container in containers:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in FATAL_REASONS:
                detail = str(waiting.get("message") or "").strip()
                fatal.append(f"pod {name}: {reason}" + (f" ({detail})" if detail else ""))
            last = (container.get("lastState") or {}).get("terminated") or {}
            if last.get("reason") == "OOMKilled":
                fatal.append(f"pod {name}: OOMKilled (raise the memory limit)")
        scheduled = _condition(status, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            fatal.append(f"pod {name}: {scheduled.get('reason', 'Unschedulable')} "
                         f"({scheduled.get('message', '')})")
    warnings = [
        f"{e.get('reason', '')}: {e.get('message', '')}".strip()
        for e in events
        if e.get("type") == "Warning" and (e.get("involvedObject") or {}).get("name") in names
    ]
    return list(dict.fromkeys(fatal)), list(dict.fromkeys(warnings))[-3:]
