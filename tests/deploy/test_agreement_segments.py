"""Agreement judged per segment: each segment's own sample of stable's reservoir replayed
to both colours, a candidate that agrees overall but not with one tenant rolled back
naming the tenant. Fake metrics and a fake clock (tests/deploy/test_controller.py); the
replays are OutputChecks built here, row by row."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from tests.deploy.test_agreement_early import Replays, check, early
from tests.deploy.test_controller import look, make
from workbench.deploy.rollout.analysis import AgreementRule, AnalysisSpec, ErrorRateRule
from workbench.deploy.rollout.controller import Stage
from workbench.deploy.rollout.evidence import AgreementTally
from workbench.deploy.rollout.phases import Phase
from workbench.deploy.rollout.segments import serve_args, uncounted
from workbench.errors import DeployValueError

if TYPE_CHECKING:
    from workbench.deploy.rollout.signals import OutputCheck

TENANT = "header:x-tenant"
RULE = AgreementRule(min_agreement=0.8, segment_by="x-tenant", max_segments=4)
SPEC = AnalysisSpec(steps=(5, 25, 100), interval=30.0, scrape=1.0, rules=(ErrorRateRule(), RULE))


def by_tenant(pooled: OutputCheck, **segments: OutputCheck) -> OutputCheck:
    return replace(pooled, segments={TENANT: segments})


def test_a_tenant_the_candidate_disagrees_with_is_rolled_back_by_name() -> None:
    # 95% of the pooled rows agree; tenant b's own sample: none of its 40 rows
    replays = Replays(by_tenant(check(400, 0.95), a=check(256, 1.0), b=check(40, 0.0, first=1000)))
    controller, _, target = make(SPEC, output=replays)
    controller.begin()
    status = early(controller)
    assert status.stage is Phase.ROLLED_BACK and target.weights == [5, 0], status.message
    assert "rule agreement failed: in segment x-tenant=b" in status.message, status.message
    (failed,) = [r for r in status.last if r.rule == "agreement"]
    decision = failed.decision or {}
    assert decision["segment"] == "x-tenant=b" and decision["segment_by"] == TENANT
    assert decision["significant"] and decision["samples"] == 40
    assert decision["segments"]["a"]["verdict"] != "fail"
    assert decision["overall"]["verdict"] != "fail"


def test_every_tenant_agreeing_passes_with_each_segment_s_verdict_kept() -> None:
    replays = Replays(by_tenant(check(400, 0.96), a=check(256, 0.97), b=check(64, 0.95, first=1000)))
    controller, _, _ = make(SPEC, output=replays)
    controller.begin()
    early(controller)
    status = look(controller, 28.0)
    assert (status.stage, status.weight) == (Stage.STEP, 25), status.message
    (agreement,) = [r for r in status.last if r.rule == "agreement"]
    assert agreement.verdict == "pass"
    segments = (agreement.decision or {})["segments"]
    assert {s: v["verdict"] for s, v in segments.items()} == {"a": "pass", "b": "pass"}


def test_without_stable_s_segment_samples_the_pooled_verdict_stands_and_says_so() -> None:
    controller, _, _ = make(SPEC, output=Replays(check(400, 0.96)))
    controller.begin()
    early(controller)
    status = look(controller, 28.0)
    (agreement,) = [r for r in status.last if r.rule == "agreement"]
    assert agreement.verdict == "pass"
    assert "no per-segment samples for header:x-tenant" in agreement.message


def test_each_segment_s_rows_are_counted_once_over_the_step() -> None:
    tally = AgreementTally()
    first = tally.add("step", by_tenant(check(10, 1.0), b=check(10, 0.0)))
    again = tally.add("step", by_tenant(check(10, 1.0), b=check(20, 1.0)))  # 10 seen, 10 new
    assert first.segments is not None and again.segments is not None
    b = again.segments[TENANT]["b"]
    assert (b.rows, b.agreement) == (20, 0.5)
    fresh = tally.add("next step", by_tenant(check(10, 1.0), b=check(5, 1.0)))
    assert fresh.segments is not None and fresh.segments[TENANT]["b"].rows == 5


def test_agreement_per_segment_is_asked_for_in_its_own_table() -> None:
    spec = AnalysisSpec.from_dict({"segment_by": "x-tenant",
                                   "agreement": {"segment_by": "x-region", "max_segments": 3}})
    rules = {rule.name: rule for rule in spec.rules}
    assert rules["agreement"].segment_by == "header:x-region"  # type: ignore[attr-defined]
    assert rules["error_rate"].segment_by == "header:x-tenant"  # type: ignore[attr-defined]
    alone = AnalysisSpec.from_dict({"segment_by": "x-tenant"})
    assert next(r for r in alone.rules if r.name == "agreement").segment_by is None  # type: ignore[attr-defined]
    assert AnalysisSpec.from_dict(spec.to_dict()) == spec  # persisted as it was given
    with pytest.raises(DeployValueError, match="segment_by"):
        AgreementRule(segment_by="query:x")


def test_stable_must_keep_segment_samples_and_the_candidate_is_started_to() -> None:
    assert serve_args([RULE]) == ("--segment-by", TENANT, "--max-segments", "4")
    assert uncounted([RULE], ("--segment-by", "header:x-region")) == [(RULE, TENANT)]
    assert uncounted([RULE], ("--segment-by", TENANT)) == []
