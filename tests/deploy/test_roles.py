"""Roles as a reader sees them (pure): stable, candidate, previous in every phase, and one
history entry per action."""

from __future__ import annotations

from workbench.deploy.rollout.phases import Phase, Rollout
from workbench.deploy.state import DeploymentState


def test_after_a_promote_the_promoted_colour_is_stable_and_the_old_one_previous() -> None:
    promoted = Rollout(phase=Phase.PROMOTED, stable="blue", weight=100)
    assert promoted.roles == {"stable": "green", "previous": "blue"}
    assert promoted.role("green") == "stable" and promoted.role("blue") == "previous"
    canary = Rollout(phase=Phase.CANARY, stable="green", weight=5)
    assert canary.roles == {"stable": "green", "candidate": "blue"}
    assert Rollout(phase=Phase.ROLLED_BACK, stable="green").roles == {"stable": "green"}


def test_verified_says_what_comes_next_for_each_strategy() -> None:
    from workbench.deploy.rollout.phases import _verified

    for strategy, next_ in (("blue-green", "waiting for promote"), ("canary", "the canary starts")):
        rollout = Rollout(phase=Phase.VERIFYING, strategy=strategy)
        assert _verified(rollout, now=1.0).message == f"all checks passed; {next_}"
        assert Rollout.from_dict(rollout.to_dict()).strategy == strategy


def test_the_controller_s_verdicts_join_the_entry_of_the_change_they_caused() -> None:
    state = DeploymentState(name="web", model="stub", repo="/r", port=8080)
    state = state.record("weight", "ok", "5% to the candidate", now=100.0, by="notebook")
    merged = state.amend("weight", since=99.0, details={"canary": "advance", "results": []},
                         by="controller", reason="step 1/2: 5% to the candidate")
    assert len(merged.history) == 1
    (entry,) = merged.history
    assert entry.by == "controller" and entry.details["canary"] == "advance"
    assert entry.reason == "step 1/2: 5% to the candidate"
    # nothing recorded for it since: a new entry of its own
    fresh = state.amend("weight", since=101.0, details={"canary": "advance"}, by="controller")
    assert len(fresh.history) == 2 and fresh.history[-1].by == "controller"
    assert state.history[0].to_dict()["stable_color"] == "blue"
