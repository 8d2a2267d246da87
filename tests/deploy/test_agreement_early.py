"""Top-1 agreement judged on every replay of a step, not only when its interval ends: the
controller replays as the step begins, counts each distinct row once over the step
(:class:`~workbench.deploy.rollout.evidence.AgreementTally`) and the agreement rule's
sequential test fails a clearly disagreeing candidate at the look that replay comes in.
Fake metrics and a fake clock (tests/deploy/test_controller.py); the replays are
OutputChecks built here, row by row."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from tests.deploy.test_controller import look, make
from workbench.deploy.rollout.analysis import AgreementRule, AnalysisSpec, ErrorRateRule
from workbench.deploy.rollout.controller import CanaryController, CanaryStatus, Stage
from workbench.deploy.rollout.evidence import AgreementTally
from workbench.deploy.rollout.phases import Phase
from workbench.deploy.rollout.replay import row_digests
from workbench.deploy.rollout.sequential import ThresholdTest, threshold_log_lr
from workbench.deploy.rollout.signals import OutputCheck

if TYPE_CHECKING:
    from workbench.deploy.rollout.verdicts import RuleResult

SPEC = AnalysisSpec(steps=(5, 25, 100), interval=30.0, scrape=1.0,
                    rules=(ErrorRateRule(), AgreementRule(min_agreement=0.8, min_rows=32)))


def check(rows: int, agreeing: float, *, first: int = 0) -> OutputCheck:
    """A replay of rows ``first`` .. ``first + rows`` (distinct digests), the first
    ``agreeing`` share of them agreeing."""
    keys = [i.to_bytes(8, "big") for i in range(first, first + rows)]
    agreed = [i < round(agreeing * rows) for i in range(rows)]
    return OutputCheck(rows=rows, agreement=sum(agreed) / rows, accuracy_stable=None,
                       accuracy_candidate=None, row_agreement=tuple(zip(keys, agreed, strict=True)))


class Replays:
    """The controller's output check: the given checks in turn (the last one again after),
    each call counted."""

    def __init__(self, *checks: OutputCheck) -> None:
        self.checks, self.calls = list(checks), 0

    def __call__(self) -> OutputCheck:
        self.calls += 1
        return self.checks[min(self.calls, len(self.checks)) - 1]


def replayed(controller: CanaryController) -> None:
    """Wait (real time) until the background replay is in."""
    deadline = time.monotonic() + 10.0
    while controller._replay.running and time.monotonic() < deadline:
        time.sleep(0.02)


def early(controller: CanaryController) -> CanaryStatus:
    """The step's first look (its replay starts), then the look that finds it in."""
    look(controller, 1.0)
    replayed(controller)
    return look(controller, 1.0)


def rolled_back_early(spec: AnalysisSpec, replays: Replays, rule: str = "agreement") -> RuleResult:
    """Run a canary of ``spec`` on ``replays``; assert the replay that starts the first step
    rolled it back, 2 seconds into a 30-second interval; ``rule``'s failing result."""
    controller, _, target = make(spec, output=replays)
    controller.begin()
    status = early(controller)
    assert status.stage is Phase.ROLLED_BACK and target.weights == [5, 0], status.message
    assert replays.calls == 1
    (failed,) = [r for r in status.last if r.rule == rule]
    assert failed.verdict == "fail" and failed.sustained
    return failed


def test_a_clearly_disagreeing_candidate_is_rolled_back_seconds_into_the_step() -> None:
    failed = rolled_back_early(SPEC, Replays(check(128, 0.3)))  # a wrong label map: 30% agree
    assert "below the minimum: log LR" in failed.message, failed.message
    decision = failed.decision or {}
    assert decision["significant"] and decision["samples"] == 128
    assert decision["statistic"] >= decision["boundary"] > 0


def test_a_good_candidate_passes_at_the_interval_end_each_row_counted_once() -> None:
    replays = Replays(check(200, 0.95))  # the same 200 rows, replayed twice in the step
    controller, _, target = make(SPEC, output=replays)
    controller.begin()
    status = early(controller)
    assert (status.stage, status.weight, replays.calls) == (Stage.STEP, 5, 1)  # no early pass
    status = look(controller, 28.0)  # the interval's end: replayed again
    assert (status.stage, status.weight, replays.calls) == (Stage.STEP, 25, 2), status.message
    (agreement,) = [r for r in status.last if r.rule == "agreement"]
    assert agreement.verdict == "pass" and agreement.samples == 200  # not 400
    assert not (agreement.decision or {})["significant"]
    assert target.weights == [5, 25]


def test_a_mild_disagreement_waits_for_the_interval_and_its_wilson_bound() -> None:
    # 74% of 540 rows (the demo's degraded version): too little evidence to decide
    # early at this level, clear enough at the interval's end
    replays = Replays(check(540, 0.74))
    controller, _, target = make(SPEC, output=replays)
    controller.begin()
    status = early(controller)
    assert (status.stage, status.weight) == (Stage.STEP, 5)
    status = look(controller, 28.0)
    assert status.stage is Phase.ROLLED_BACK and target.weights == [5, 0]
    (failed,) = [r for r in status.last if r.rule == "agreement"]
    assert "lower bound" in failed.message and "below the minimum" not in failed.message


def test_the_tally_counts_each_row_once_and_starts_afresh_each_step() -> None:
    tally = AgreementTally()
    first = tally.add("step 1", check(100, 0.5))
    assert (first.rows, first.agreement) == (100, 0.5)
    again = tally.add("step 1", check(100, 1.0, first=50))  # 50 seen, 50 new (all agree)
    assert (again.rows, again.agreement) == (150, 100 / 150)
    fresh = tally.add("step 2", check(10, 1.0))
    assert (fresh.rows, fresh.agreement) == (10, 1.0)
    scored = OutputCheck(rows=3, agreement=None, accuracy_stable=None, accuracy_candidate=None)
    assert tally.add("step 2", scored) is scored


def test_row_digests_name_a_row_by_its_contents() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    digests = row_digests({"x": x})
    assert len(set(digests)) == 4
    assert row_digests({"x": x[[2, 0]]}) == [digests[2], digests[0]]
    assert row_digests({"x": x.astype(np.float64)})[0] != digests[0]  # the dtype counts


def test_agreement_at_the_minimum_is_rarely_rejected_however_often_it_is_read() -> None:
    """A/A at the boundary: 2,000 simulated steps whose rows agree 80% of the time
    (exactly the minimum), read after every replay of 64 new rows up to 1,024 rows: the
    share ever rejected stays within the level."""
    alpha = 0.01 / 3
    rng = np.random.default_rng(7)
    agreed = rng.random((2000, 1024)) < 0.8
    rows = np.arange(64, 1025, 64)
    totals = agreed.cumsum(axis=1)[:, rows - 1]
    statistic = threshold_log_lr(totals, np.broadcast_to(rows, totals.shape), 0.8, above=False)
    rejected = (statistic >= np.log(1 / alpha)).any(axis=1).mean()
    print(f"\nA/A at the minimum: {rejected:.2%} of 2,000 steps rejected (level {alpha:.2%})")
    assert rejected <= alpha
    # and a candidate agreeing on 30% is rejected on its first 64 rows
    assert ThresholdTest(0.8, alpha=alpha, above=False).decide(19, 64).significant


def test_a_replay_still_running_at_the_interval_end_is_the_one_that_ends_it() -> None:
    release = threading.Event()
    calls = []

    def slow() -> OutputCheck:
        calls.append(1)
        release.wait(20.0)
        return check(64, 1.0)

    controller, _, target = make(SPEC, output=slow)
    controller.begin()
    look(controller, 1.0)  # the step's replay starts
    status = look(controller, 29.0)  # the interval is over; that replay is under way
    assert (status.stage, status.weight) == (Stage.STEP, 5)
    release.set()
    replayed(controller)
    status = look(controller, 1.0)
    assert (status.stage, status.weight) == (Stage.STEP, 25), status.message
    assert target.weights == [5, 25] and len(calls) == 1


def test_a_task_score_without_its_rows_is_judged_when_the_interval_ends() -> None:
    """A pooled score alone (CER, box F1, within tolerance) is a bootstrap bound, not a
    sequential test: the replay that starts the step does not decide it (a second look per
    interval would raise its false-rollback rate). With each row's score it may
    (tests/deploy/test_scores_early.py)."""
    from workbench.model.task import Task
    from workbench.runtime.scoring import ScoreResult

    bad = ScoreResult(Task.OCR, "cer", 0.6, (0.5, 0.7), 64)
    scored = OutputCheck(rows=64, agreement=None, accuracy_stable=None, accuracy_candidate=None,
                         score=bad)
    controller, _, target = make(SPEC, output=Replays(scored))
    controller.begin()
    status = early(controller)
    assert (status.stage, status.weight) == (Stage.STEP, 5), status.message
    status = look(controller, 28.0)
    assert status.stage is Phase.ROLLED_BACK and target.weights == [5, 0]
    (failed,) = [r for r in status.last if r.rule == "agreement"]
    assert "cer" in failed.message and failed.sustained
