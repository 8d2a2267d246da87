"""Who acted on a deployment, and one entry of its history.

Every action (create, update, weight, promote, rollback, ...) is recorded once, with
the face that took it (``cli``, ``notebook``, ``controller``, ``api``), the person and
process (:func:`actor`), and the verdict numbers behind it.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["HistoryEntry", "actor", "face", "set_face"]


#: Which face acts in this process (``cli``, ``notebook``, ``api``); set by the CLI at start.
_FACE: list[str] = []


def set_face(face: str) -> None:
    """Record ``face`` (``cli``, ``notebook``, ``controller``) as who acts in this process."""
    _FACE[:] = [face]


def face() -> str:
    """Who acts in this process: as set by :func:`set_face`, else ``notebook`` inside a
    Jupyter kernel, else ``api``."""
    if _FACE:
        return _FACE[0]
    return "notebook" if "ipykernel" in sys.modules else "api"


def actor() -> str:
    """Who acts: ``user@host:pid``, recorded in the history."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class HistoryEntry:
    """One action on a deployment: when, what, from which version to which, how it ended."""

    time: float
    action: str  # create, update, verify, promote, weight, switch, rollback, abort, delete, ...
    outcome: str  # "ok" | "failed" | "refused"
    stable_version: str | None
    candidate_version: str | None
    phase: str
    weights: Mapping[str, int] = field(default_factory=dict, compare=False)
    reason: str = ""
    actor: str = ""
    details: Mapping[str, Any] = field(default_factory=dict, compare=False)  # e.g. rule verdicts
    by: str = ""  # which face acted: controller, cli, notebook, api ("" in older entries)
    stable_color: str = ""  # the colour that was stable then ("" in older entries)

    def __post_init__(self) -> None:
        if self.outcome not in ("ok", "failed", "refused"):
            raise ValueError(f"outcome must be ok, failed or refused, not {self.outcome!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "action": self.action,
            "outcome": self.outcome,
            "stable_version": self.stable_version,
            "candidate_version": self.candidate_version,
            "phase": self.phase,
            "weights": dict(self.weights),
            "reason": self.reason,
            "actor": self.actor,
            "by": self.by,
            "stable_color": self.stable_color,
            **({"details": dict(self.details)} if self.details else {}),
        }

    @property
    def split(self) -> tuple[int, int]:
        """The traffic of (stable, candidate) in percent after this action."""
        stable = self.stable_color or max(self.weights, key=lambda c: self.weights[c], default="")
        ours = self.weights.get(stable, 100 if len(self.weights) <= 1 else 0)
        theirs = sum(w for c, w in self.weights.items() if c != stable)
        return ours, theirs

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryEntry:
        def opt(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            time=float(data["time"]),
            action=str(data["action"]),
            outcome=str(data["outcome"]),
            stable_version=opt("stable_version"),
            candidate_version=opt("candidate_version"),
            phase=str(data.get("phase", "")),
            weights={str(k): int(v) for k, v in dict(data.get("weights", {})).items()},
            reason=str(data.get("reason", "")),
            actor=str(data.get("actor", "")),
            details=dict(data.get("details") or {}),
            by=str(data.get("by", "")),
            stable_color=str(data.get("stable_color", "")),
        )
