"""The rollout state machine, one tick at a time, against a fake probe with knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from workbench.deploy.rollout import phases as flow
from workbench.deploy.rollout.phases import CHECKS, TRANSITIONS, Phase, Rollout, Verdict, advance
from workbench.errors import RolloutError


@dataclass
class FakeProbe:
    """Each knob is the verdict the next call returns; ``calls`` records what was asked."""

    running_: Verdict = field(default_factory=Verdict.passed)
    ready_: Verdict = field(default_factory=Verdict.passed)
    deep_: Verdict = field(default_factory=Verdict.passed)
    agreement_: Verdict = field(default_factory=lambda: Verdict.passed("top-1 100%"))
    calls: list[str] = field(default_factory=list)

    def running(self) -> Verdict:
        self.calls.append("running")
        return self.running_

    def ready(self) -> Verdict:
        self.calls.append("ready")
        return self.ready_

    def deep_health(self) -> Verdict:
        self.calls.append("deep_health")
        return self.deep_

    def agreement(self) -> Verdict:
        self.calls.append("agreement")
        return self.agreement_


def started(**kwargs: object) -> Rollout:
    return flow.begin_update(Rollout(), now=0.0, timeout=10.0, **kwargs)  # type: ignore[arg-type]


def test_every_phase_has_transitions_and_a_comment() -> None:
    assert set(TRANSITIONS) == set(Phase)
    with open(flow.__file__, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for phase in Phase:
        at = next(i for i, text in enumerate(lines) if text.strip().startswith(f"{phase.name} = "))
        assert lines[at - 1].strip().startswith("#"), phase


def test_update_starts_on_the_other_colour_with_no_traffic() -> None:
    r = started()
    assert r.phase is Phase.STARTING
    assert (r.stable, r.candidate, r.weights) == ("blue", "green", {"blue": 100, "green": 0})
    assert r.deadline == 10.0


def test_verification_runs_one_check_per_tick_in_order() -> None:
    probe = FakeProbe()
    r = started()
    r = advance(r, probe, now=1.0)
    assert r.phase is Phase.VERIFYING and r.passed == ()
    for i, check in enumerate(CHECKS[:-1]):
        r = advance(r, probe, now=1.0)
        assert r.phase is Phase.VERIFYING
        assert r.passed == CHECKS[: i + 1]
        assert probe.calls[-1] == check
    r = advance(r, probe, now=1.0)
    assert r.phase is Phase.VERIFIED
    assert r.weights == {"blue": 100, "green": 0}
    assert r.passed == CHECKS
    assert advance(r, probe, now=2.0) is r  # nothing to do any more


def test_not_ready_waits_then_times_out_as_failed() -> None:
    probe = FakeProbe(ready_=Verdict.pending("503"))
    r = advance(started(), probe, now=1.0)
    r = advance(r, probe, now=5.0)
    assert r.phase is Phase.VERIFYING and "503" in r.message
    r = advance(r, probe, now=11.0)
    assert r.phase is Phase.FAILED
    assert "timed out waiting for ready" in r.message
    assert r.weight == 0


def test_a_candidate_that_exits_fails_at_once() -> None:
    probe = FakeProbe(running_=Verdict.failed("exited with code 3"))
    r = advance(started(), probe, now=1.0)
    assert r.phase is Phase.FAILED and "code 3" in r.message
    assert probe.calls == ["running"]


@pytest.mark.parametrize("knob", ["deep_", "agreement_"])
def test_a_failed_check_fails_the_rollout(knob: str) -> None:
    probe = FakeProbe(**{knob: Verdict.failed("bad")})
    r = started()
    while r.in_progress:
        r = advance(r, probe, now=1.0)
    assert r.phase is Phase.FAILED
    assert "bad" in r.message and r.weight == 0


def test_auto_promote_goes_straight_to_promoted() -> None:
    probe = FakeProbe()
    r = started(auto_promote=True)
    while r.in_progress:
        r = advance(r, probe, now=1.0)
    assert r.phase is Phase.PROMOTED
    assert r.weights == {"blue": 0, "green": 100}


def test_checks_can_be_narrowed() -> None:
    probe = FakeProbe()
    r = started(checks=("ready",))
    while r.in_progress:
        r = advance(r, probe, now=1.0)
    assert r.phase is Phase.VERIFIED
    assert "agreement" not in probe.calls


def verified() -> Rollout:
    r = started()
    probe = FakeProbe()
    while r.in_progress:
        r = advance(r, probe, now=1.0)
    return r


def test_weight_steps_then_promote_and_rollback() -> None:
    r = flow.set_weight(verified(), 5, now=2.0)
    assert (r.phase, r.weights, r.step) == (Phase.CANARY, {"blue": 95, "green": 5}, 1)
    r = flow.set_weight(r, 25, now=3.0)
    assert (r.phase, r.weights, r.step) == (Phase.CANARY, {"blue": 75, "green": 25}, 2)
    r = flow.promote(r, now=4.0)
    assert (r.phase, r.weights) == (Phase.PROMOTED, {"blue": 0, "green": 100})
    assert r.live == "green"
    r = flow.rollback(r, now=5.0, reason="p99 too high")
    assert (r.phase, r.weights, r.message) == (
        Phase.ROLLED_BACK,
        {"blue": 100, "green": 0},
        "p99 too high",
    )


def test_switch_flips_traffic_and_back() -> None:
    r = flow.switch(verified(), now=2.0)
    assert (r.phase, r.weights) == (Phase.PROMOTED, {"blue": 0, "green": 100})
    assert (r.step, r.message) == (1, "switched to green; blue stays warm")
    r = flow.switch(r, now=3.0)
    assert (r.phase, r.weights) == (Phase.VERIFIED, {"blue": 100, "green": 0})
    assert (r.step, r.message) == (2, "switched to blue; green stays warm")


def test_next_update_after_promote_makes_the_promoted_colour_stable() -> None:
    r = flow.promote(verified(), now=2.0)
    r = flow.begin_update(r, now=3.0, timeout=5.0)
    assert (r.phase, r.stable, r.candidate) == (Phase.STARTING, "green", "blue")
    assert r.weights == {"green": 100, "blue": 0}


def test_abort_drops_a_candidate_before_promotion_only() -> None:
    r = flow.abort(started(), now=1.0)
    assert r.phase is Phase.STABLE and r.weight == 0
    promoted = flow.promote(verified(), now=2.0)
    with pytest.raises(RolloutError, match="cannot abort in phase 'promoted'"):
        flow.abort(promoted, now=3.0)


@pytest.mark.parametrize(
    ("action", "phase"),
    [
        (lambda r: flow.promote(r, now=1.0), Phase.STABLE),
        (lambda r: flow.rollback(r, now=1.0), Phase.STABLE),
        (lambda r: flow.switch(r, now=1.0), Phase.STABLE),
        (lambda r: flow.set_weight(r, 10, now=1.0), Phase.STARTING),
        (lambda r: flow.begin_update(r, now=1.0, timeout=1.0), Phase.VERIFIED),
    ],
)
def test_actions_the_phase_does_not_allow_are_refused(action: object, phase: Phase) -> None:
    r = Rollout(phase=phase)
    with pytest.raises(RolloutError, match=f"in phase '{phase.value}'"):
        action(r)  # type: ignore[operator]


def test_rollout_round_trips_through_a_dict() -> None:
    r = flow.set_weight(verified(), 30, now=2.0)
    assert Rollout.from_dict(r.to_dict()) == r


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        Rollout(weight=101)
    with pytest.raises(ValueError, match="stable"):
        Rollout(stable="red")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight"):
        flow.set_weight(verified(), 150, now=1.0)
