"""The blue/green rollout as data plus a pure step.

A deployment has two colours. The **stable** colour is the known-good one (the
rollback target); the other colour is the **candidate**. ``weight`` is the share of
traffic (percent) the router sends to the candidate. The phases::

    stable ─update─▶ starting ─▶ verifying ─▶ verified ─weight─▶ canary(step)
                         │            │          │  ╲               │
                         ▼            ▼          │   promote        │ promote
                       failed       failed       │      ╲           ▼
                                                 └──────▶ promoted ◀┘
    rollback (verified | canary | promoted) ─▶ rolled_back
    abort (starting … canary, failed)       ─▶ stable

``advance()`` moves a rollout that is starting or verifying by at most one check per
call, asking a :class:`Probe` (readiness, deep health, output agreement); user
commands (:func:`promote`, :func:`rollback`, :func:`switch`, :func:`set_weight`,
:func:`abort`, :func:`begin_update`) are pure functions too. Every move is checked
against :data:`TRANSITIONS`, so an action the phase does not allow raises
:class:`~workbench.errors.RolloutError` naming the phase. Side effects (router
reloads, stopping instances, persisting) belong to the caller, which runs them in
one order: traffic first, then instances, then the state file, then the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from workbench.errors import DeployValueError, RolloutError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench._types import Color


class Phase(str, Enum):
    """Where a deployment's rollout stands."""

    # One colour (stable) takes all traffic; no candidate runs, nothing in progress.
    STABLE = "stable"
    # The backend is starting the candidate instance; it has no traffic.
    STARTING = "starting"
    # The candidate runs; readiness, deep health and output agreement are being checked.
    VERIFYING = "verifying"
    # The candidate passed verification and is warm with no traffic: waiting for promote
    # (blue-green), or for the canary controller's first step.
    VERIFIED = "verified"
    # The candidate takes a share of the traffic (``weight`` percent, ``step`` changes so far).
    CANARY = "canary"
    # The candidate takes all traffic; the stable colour stays warm as the rollback target.
    PROMOTED = "promoted"
    # Exit: all traffic went back to stable and the candidate was stopped.
    ROLLED_BACK = "rolled_back"
    # Exit: the candidate failed to start or verify; it never received traffic and was stopped.
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


#: Which phase may follow which. Anything else is a RolloutError.
TRANSITIONS: Mapping[Phase, frozenset[Phase]] = {
    Phase.STABLE: frozenset({Phase.STARTING}),
    Phase.STARTING: frozenset({Phase.VERIFYING, Phase.FAILED, Phase.STABLE}),
    Phase.VERIFYING: frozenset({Phase.VERIFIED, Phase.PROMOTED, Phase.FAILED, Phase.STABLE}),
    Phase.VERIFIED: frozenset(
        {Phase.CANARY, Phase.PROMOTED, Phase.ROLLED_BACK, Phase.STABLE, Phase.VERIFIED}
    ),
    Phase.CANARY: frozenset(
        {Phase.CANARY, Phase.VERIFIED, Phase.PROMOTED, Phase.ROLLED_BACK, Phase.STABLE}
    ),
    Phase.PROMOTED: frozenset({Phase.CANARY, Phase.VERIFIED, Phase.ROLLED_BACK, Phase.STARTING}),
    Phase.ROLLED_BACK: frozenset({Phase.STARTING}),
    Phase.FAILED: frozenset({Phase.STARTING, Phase.STABLE}),
}

#: Phases in which a candidate instance is expected to be running.
CANDIDATE_PHASES = frozenset(
    {Phase.STARTING, Phase.VERIFYING, Phase.VERIFIED, Phase.CANARY, Phase.PROMOTED}
)
#: Phases from which a new rollout (``update``) may begin.
IDLE_PHASES = frozenset({Phase.STABLE, Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED})

#: The verification checks, in the order ``advance()`` runs them.
CHECKS: tuple[str, ...] = ("ready", "deep_health", "agreement")
#: Top-1 agreement with stable a candidate needs by default: the demo's better 1.1.0
#: agrees with 1.0.0 on ~94% of its sample, the degraded 1.2.0 on ~74%.
DEFAULT_MIN_AGREEMENT = 0.85


def verification_threshold(min_agreement: float | None, strategy: str) -> float:
    """The agreement a candidate needs before traffic: as given, else the default for the
    strategy (a canary's analysis judges agreement step by step on live inputs instead)."""
    if min_agreement is not None:
        return min_agreement
    return 0.0 if strategy == "canary" else DEFAULT_MIN_AGREEMENT


#: How a verified candidate goes on: a promote by hand, or the canary controller's steps.
STRATEGIES = ("blue-green", "canary")

#: Fewer compared rows than this make an agreement verdict inconclusive.
MIN_AGREEMENT_ROWS = 100


def other(color: Color) -> Color:
    """The other colour."""
    return "green" if color == "blue" else "blue"


@dataclass(frozen=True)
class Verdict:
    """What one probe found: ``ok`` is True (passed), False (failed) or None (not yet)."""

    ok: bool | None
    message: str = ""

    @classmethod
    def passed(cls, message: str = "") -> Verdict:
        return cls(True, message)

    @classmethod
    def failed(cls, message: str) -> Verdict:
        return cls(False, message)

    @classmethod
    def pending(cls, message: str = "") -> Verdict:
        return cls(None, message)


class Probe(Protocol):
    """Looks at the candidate for ``advance()``; each call is one observation."""

    def running(self) -> Verdict:
        """Whether the candidate's process or container still runs."""

    def ready(self) -> Verdict:
        """``/v2/health/ready`` (pending while it is not ready yet)."""

    def deep_health(self) -> Verdict:
        """``/v2/health/deep``: a real inference on the manifest sample."""

    def agreement(self) -> Verdict:
        """Output agreement of the candidate against the stable colour."""


@dataclass(frozen=True)
class Rollout:
    """The persisted status of a deployment's rollout (see the module docstring)."""

    phase: Phase = Phase.STABLE
    stable: Color = "blue"
    weight: int = 0  # percent of traffic to the candidate colour
    step: int = 0  # traffic changes in the current rollout (canary steps)
    passed: tuple[str, ...] = ()  # verification checks passed so far, in CHECKS order
    message: str = ""
    since: float = 0.0  # when the current phase began (time.time())
    deadline: float | None = None  # verification fails if not done by then
    auto_promote: bool = False
    checks: tuple[str, ...] = field(default=CHECKS)
    strategy: str = "blue-green"  # or "canary": verified means the canary starts, not a wait

    @property
    def roles(self) -> dict[str, Color]:
        """Which colour plays which role for a reader: ``stable`` (the known-good colour
        taking the traffic), ``candidate`` (the new one, while it is judged), ``previous``
        (after a promote: the old stable, kept warm as the rollback target).

        After a promote the candidate *is* the new stable, as Argo Rollouts shows it;
        :attr:`stable` keeps naming the rollback target until the next update.
        """
        if self.phase is Phase.PROMOTED:
            return {"stable": self.candidate, "previous": self.stable}
        if self.phase in (Phase.STABLE, Phase.ROLLED_BACK, Phase.FAILED):
            return {"stable": self.stable}
        return {"stable": self.stable, "candidate": self.candidate}

    def role(self, color: Color) -> str:
        """The role ``color`` plays for a reader (see :attr:`roles`); ``candidate`` for a
        colour left over from a rollout that ended."""
        return next((r for r, c in self.roles.items() if c == color), "candidate")

    def __post_init__(self) -> None:
        if not isinstance(self.phase, Phase):
            object.__setattr__(self, "phase", Phase(self.phase))
        if self.stable not in ("blue", "green"):
            raise DeployValueError(f"stable must be 'blue' or 'green', not {self.stable!r}")
        if not 0 <= self.weight <= 100:
            raise DeployValueError(f"weight must be in 0..100, not {self.weight}")
        unknown = set(self.checks) - set(CHECKS)
        if unknown:
            raise DeployValueError(f"unknown verification checks: {sorted(unknown)}")

    @property
    def candidate(self) -> Color:
        return other(self.stable)

    @property
    def weights(self) -> dict[Color, int]:
        """Traffic share per colour, summing to 100."""
        return {self.stable: 100 - self.weight, self.candidate: self.weight}

    @property
    def live(self) -> Color:
        """The colour that takes most of the traffic (stable on a tie)."""
        return self.candidate if self.weight > 50 else self.stable

    @property
    def in_progress(self) -> bool:
        """Whether ``advance()`` still has work to do (starting or verifying)."""
        return self.phase in (Phase.STARTING, Phase.VERIFYING)

    def to_dict(self) -> dict[str, object]:
        return {
            "phase": self.phase.value,
            "stable": self.stable,
            "weight": self.weight,
            "step": self.step,
            "passed": list(self.passed),
            "message": self.message,
            "since": self.since,
            "deadline": self.deadline,
            "auto_promote": self.auto_promote,
            "checks": list(self.checks),
            "strategy": self.strategy,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Rollout:
        deadline = data.get("deadline")
        return cls(
            phase=Phase(str(data["phase"])),
            stable="green" if data.get("stable") == "green" else "blue",
            weight=int(str(data.get("weight", 0))),
            step=int(str(data.get("step", 0))),
            passed=tuple(str(c) for c in _list(data.get("passed"))),
            message=str(data.get("message", "")),
            since=float(str(data.get("since", 0.0))),
            deadline=None if deadline is None else float(str(deadline)),
            auto_promote=bool(data.get("auto_promote", False)),
            checks=tuple(str(c) for c in _list(data.get("checks", list(CHECKS)))),
            strategy=str(data.get("strategy", "blue-green")),
        )


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple)) else []


def move(rollout: Rollout, to: Phase, *, now: float, **changes: object) -> Rollout:
    """Return ``rollout`` in phase ``to`` (checked against TRANSITIONS) with ``changes``."""
    if to not in TRANSITIONS[rollout.phase]:
        raise RolloutError(f"a rollout in phase {rollout.phase.value!r} cannot go to {to.value!r}")
    since = rollout.since if to is rollout.phase else now
    return replace(rollout, phase=to, since=since, **changes)  # type: ignore[arg-type]


def _refuse(rollout: Rollout, action: str, allowed: frozenset[Phase], hint: str = "") -> None:
    if rollout.phase not in allowed:
        names = ", ".join(sorted(p.value for p in allowed))
        raise RolloutError(
            f"cannot {action} in phase {rollout.phase.value!r} (allowed in: {names})"
            + (f"; {hint}" if hint else "")
        )


# ----------------------------------------------------------------------------- commands


def begin_update(
    rollout: Rollout,
    *,
    now: float,
    timeout: float,
    auto_promote: bool = False,
    checks: tuple[str, ...] = CHECKS,
    strategy: str = "blue-green",
) -> Rollout:
    """Start a new rollout. From ``promoted`` the promoted colour first becomes stable."""
    if strategy not in STRATEGIES:
        raise DeployValueError(f"strategy is blue-green or canary, not {strategy!r}")
    _refuse(rollout, "update", IDLE_PHASES, "promote, roll back or abort the current rollout first")
    stable = rollout.candidate if rollout.phase is Phase.PROMOTED else rollout.stable
    return move(
        rollout,
        Phase.STARTING,
        now=now,
        stable=stable,
        weight=0,
        step=0,
        passed=(),
        message="starting the candidate",
        deadline=now + timeout,
        auto_promote=auto_promote,
        checks=checks,
        strategy=strategy,
    )


def promote(rollout: Rollout, *, now: float) -> Rollout:
    """All traffic to the candidate; stable stays warm as the rollback target."""
    _refuse(rollout, "promote", frozenset({Phase.VERIFIED, Phase.CANARY}))
    return move(
        rollout, Phase.PROMOTED, now=now, weight=100, step=rollout.step + 1, message="promoted"
    )


def set_weight(rollout: Rollout, percent: int, *, now: float) -> Rollout:
    """Send ``percent`` of traffic to the candidate (0 keeps it warm, 100 promotes)."""
    if not 0 <= percent <= 100:
        raise DeployValueError(f"weight must be a percentage in 0..100, not {percent}")
    _refuse(rollout, "set weights", frozenset({Phase.VERIFIED, Phase.CANARY, Phase.PROMOTED}))
    to = Phase.PROMOTED if percent == 100 else Phase.VERIFIED if percent == 0 else Phase.CANARY
    return move(
        rollout,
        to,
        now=now,
        weight=percent,
        step=rollout.step + 1,
        message=f"{percent}% of traffic to {rollout.candidate}",
    )


def switch(rollout: Rollout, *, now: float) -> Rollout:
    """Flip all traffic to the colour that has less of it now; both stay warm."""
    _refuse(
        rollout,
        "switch",
        frozenset({Phase.VERIFIED, Phase.CANARY, Phase.PROMOTED}),
        "switch needs both colours running and verified",
    )
    back = rollout.weight == 100  # the candidate has it all: back to stable
    to, warm = (rollout.stable, rollout.candidate) if back else (rollout.candidate, rollout.stable)
    return move(
        rollout,
        Phase.VERIFIED if back else Phase.PROMOTED,
        now=now,
        weight=0 if back else 100,
        step=rollout.step + 1,
        message=f"switched to {to}; {warm} stays warm",
    )


def rollback(rollout: Rollout, *, now: float, reason: str = "") -> Rollout:
    """All traffic back to stable; the caller then stops the candidate."""
    _refuse(
        rollout,
        "roll back",
        frozenset({Phase.VERIFIED, Phase.CANARY, Phase.PROMOTED}),
        "use abort to drop a candidate that is still starting or verifying",
    )
    return move(
        rollout,
        Phase.ROLLED_BACK,
        now=now,
        weight=0,
        deadline=None,
        message=reason or f"rolled back to {rollout.stable}",
    )


def abort(rollout: Rollout, *, now: float, reason: str = "") -> Rollout:
    """Drop the candidate before it was promoted; stable keeps all traffic."""
    _refuse(
        rollout,
        "abort",
        frozenset({Phase.STARTING, Phase.VERIFYING, Phase.VERIFIED, Phase.CANARY, Phase.FAILED}),
        "use rollback after a promote",
    )
    return move(
        rollout,
        Phase.STABLE,
        now=now,
        weight=0,
        passed=(),
        deadline=None,
        message=reason or "aborted",
    )


def fail(rollout: Rollout, reason: str, *, now: float) -> Rollout:
    """The candidate failed while starting or verifying; stable keeps all traffic."""
    return move(rollout, Phase.FAILED, now=now, weight=0, deadline=None, message=reason)


# ----------------------------------------------------------------------------- the step


def advance(rollout: Rollout, probe: Probe, *, now: float) -> Rollout:
    """Move a starting or verifying rollout by at most one check; other phases are returned as is.

    - ``starting`` → ``verifying`` once the candidate runs (``failed`` if it exited).
    - ``verifying`` runs the next check of ``rollout.checks`` in :data:`CHECKS` order:
      passed → recorded; failed → ``failed``; pending → wait until the deadline.
      When every check passed: ``verified`` (or ``promoted`` with ``auto_promote``).
    """
    if not rollout.in_progress:
        return rollout
    running = probe.running()
    if running.ok is False:
        return fail(rollout, running.message or "the candidate exited", now=now)
    if rollout.phase is Phase.STARTING:
        if running.ok:
            return move(rollout, Phase.VERIFYING, now=now, message="waiting for readiness")
        return _wait(rollout, running, now=now, what="the candidate to start")
    pending = [c for c in CHECKS if c in rollout.checks and c not in rollout.passed]
    if not pending:
        return _verified(rollout, now=now)
    check = pending[0]
    verdict: Verdict = getattr(probe, check)()
    if verdict.ok is None:
        return _wait(rollout, verdict, now=now, what=check.replace("_", " "))
    if verdict.ok is False:
        return fail(rollout, f"{check.replace('_', ' ')} failed: {verdict.message}", now=now)
    passed = (*rollout.passed, check)
    if len(pending) == 1:
        return _verified(replace(rollout, passed=passed, message=verdict.message), now=now)
    return replace(rollout, passed=passed, message=verdict.message or f"{check} passed")


def _wait(rollout: Rollout, verdict: Verdict, *, now: float, what: str) -> Rollout:
    if rollout.deadline is not None and now >= rollout.deadline:
        detail = f" ({verdict.message})" if verdict.message else ""
        return fail(rollout, f"timed out waiting for {what}{detail}", now=now)
    message = verdict.message or f"waiting for {what}"
    return rollout if message == rollout.message else replace(rollout, message=message)


def _verified(rollout: Rollout, *, now: float) -> Rollout:
    if rollout.auto_promote:
        return move(
            rollout,
            Phase.PROMOTED,
            now=now,
            weight=100,
            step=rollout.step + 1,
            deadline=None,
            message="verified and promoted",
        )
    next_ = "the canary starts" if rollout.strategy == "canary" else "waiting for promote"
    return move(
        rollout,
        Phase.VERIFIED,
        now=now,
        deadline=None,
        message=f"all checks passed; {next_}",
    )
