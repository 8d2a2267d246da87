"""A replay that failed is missing evidence, not disagreement (pure logic, fake instances).

On a busy host a replayed batch can meet a full queue (503), a timeout or a reset
connection on either colour. The agreement rule must judge only the rows both colours
answered, say how many failed and why, and be inconclusive, never failing, when too few
rows are left: a candidate that fails requests is the error-rate rule's business.
Deploy verification's agreement check asks again when a colour was busy.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from workbench.deploy.rollout.analysis import AccuracyRule, AgreementRule, Observation
from workbench.deploy.rollout.replay import replay
from workbench.deploy.rollout.signals import ColorWindow, OutputCheck
from workbench.errors import ServingError
from workbench.model.task import Task

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from workbench._types import Array

BUSY = ServingError("POST http://candidate/v2/models/digits/infer answered 503: queue full",
                    status=503)
SLOW = ServingError("POST http://candidate/v2/models/digits/infer timed out "
                    "(no full answer within 30 s)")


def same(x: Array) -> Array:
    """The stable model: class scores read off the first ten columns."""
    scores: Array = x[:, :10]
    return scores


def shifted(x: Array) -> Array:
    """A degraded model: every row's class moved by one."""
    scores: Array = np.roll(x[:, :10], 1, axis=1)
    return scores


class Instance:
    """A serving instance's ``infer``, with knobs: ``fail`` maps a call (1-based) to the
    error it raises."""

    def __init__(self, model: Callable[[Array], Array] = same,
                 fail: Mapping[int, ServingError] | None = None) -> None:
        self.model, self.fail, self.calls = model, dict(fail or {}), 0

    def infer(self, model: str, inputs: Mapping[str, Array]) -> Any:
        self.calls += 1
        if self.calls in self.fail:
            raise self.fail[self.calls]
        return SimpleNamespace(outputs={"logits": self.model(np.asarray(inputs["x"]))})


@pytest.fixture
def colours(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Instance]]:
    """URL -> fake instance; replay's clients connect to them."""
    found: dict[str, Instance] = {"stable": Instance(), "candidate": Instance()}

    class Client:
        def __init__(self, url: str, **_: object) -> None:
            self.instance = found[url]

        def __enter__(self) -> Instance:
            return self.instance

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr("workbench.deploy.client.ServingClient", Client)
    yield found


def reservoir(rows: int = 256) -> dict[str, Array]:
    return {"x": np.random.default_rng(7).normal(size=(rows, 64)).astype(np.float32)}


def judged(check: OutputCheck) -> Any:
    window = ColorWindow("green", 30.0, 100, 0, 10.0, 1e8)
    return AgreementRule().judge(Observation(30.0, window, output=check))


def test_a_good_candidate_whose_replay_met_a_full_queue_passes_on_the_rows_it_answered(
        colours: dict[str, Instance]) -> None:
    colours["candidate"].fail = {2: BUSY}  # one batch of 64 of four
    check = replay("stable", "candidate", "digits", reservoir())
    result = judged(check)
    assert result.verdict == "pass" and result.samples == 192
    assert (check.rows, check.failed, check.agreement) == (192, 64, 1.0)
    assert "100.0% of 192 rows agree" in result.message
    assert "64 of 256 replayed rows failed: candidate 503 (64)" in result.message
    assert result.decision is not None
    assert result.decision["compared"] == 192 and result.decision["failed"] == 64
    assert result.decision["failures"] == {"candidate 503": 64}


def test_too_few_rows_left_after_failed_replays_is_inconclusive_never_a_fail(
        colours: dict[str, Instance]) -> None:
    # 15 of 16 batches fail: a full queue or a timeout, 16 rows left (32 needed)
    colours["candidate"].fail = {i: (BUSY if i % 2 else SLOW) for i in range(1, 16)}
    check = replay("stable", "candidate", "digits", reservoir(), batch_rows=16)
    result = judged(check)
    assert result.verdict == "inconclusive" and not result.sustained
    assert (check.rows, check.failed) == (16, 240)
    assert result.message.startswith("16 rows compared, need 32")
    assert "240 of 256 replayed rows failed: candidate 503 (128), candidate timeout (112)" \
        in result.message


def test_no_row_answered_by_both_is_inconclusive_and_says_why(
        colours: dict[str, Instance]) -> None:
    colours["candidate"].fail = {i: BUSY for i in range(1, 5)}
    check = replay("stable", "candidate", "digits", reservoir())
    result = judged(check)
    assert result.verdict == "inconclusive"
    assert (check.rows, check.agreement, check.failed) == (0, None, 256)
    assert result.message == ("no rows compared; 256 of 256 replayed rows failed: "
                              "candidate 503 (256)")


def test_a_batch_stable_failed_is_left_out_and_named(colours: dict[str, Instance]) -> None:
    colours["stable"].fail = {1: SLOW}
    check = replay("stable", "candidate", "digits", reservoir())
    assert (check.rows, check.failed, check.agreement) == (192, 64, 1.0)
    assert "64 of 256 replayed rows failed: stable timeout (64)" in judged(check).message


def test_a_disagreeing_candidate_still_fails_on_the_rows_it_answered(
        colours: dict[str, Instance]) -> None:
    colours["candidate"] = Instance(shifted, fail={1: BUSY})
    check = replay("stable", "candidate", "digits", reservoir())
    assert (check.rows, check.failed, check.agreement) == (192, 64, 0.0)
    result = judged(check)
    assert (result.verdict, result.sustained) == ("fail", True)
    assert "0.0% of 192 rows agree" in result.message


def test_accuracy_is_measured_on_the_rows_both_answered(colours: dict[str, Instance]) -> None:
    inputs = reservoir(128)
    labels = np.argmax(inputs["x"][:, :10], axis=1)
    colours["candidate"].fail = {1: BUSY}
    check = replay("stable", "candidate", "digits", inputs, labels=labels)
    assert (check.accuracy_stable, check.accuracy_candidate) == (1.0, 1.0)
    result = AccuracyRule().judge(Observation(30.0, ColorWindow("g", 30.0, 1, 0, 1.0, 1.0),
                                              output=check))
    assert result.verdict == "pass"


def test_a_scored_replay_scores_only_the_rows_both_answered(
        colours: dict[str, Instance]) -> None:
    colours["candidate"].fail = {1: SLOW}
    # generic tensors: within tolerance on at least 99% (lower bound), so more rows
    check = replay("stable", "candidate", "digits", reservoir(1024), task=Task.GENERIC)
    result = judged(check)
    assert result.verdict == "pass"
    assert (check.rows, check.failed) == (960, 64)
    assert check.score is not None and check.score.value == 1.0
    assert "64 of 1024 replayed rows failed: candidate timeout (64)" in result.message


class Answering(Instance):
    """An instance as deploy verification's client sees it: answers name their version."""

    def infer(self, model: str, inputs: Mapping[str, Array]) -> Any:
        answer = super().infer(model, inputs)
        answer.version = "1.x"
        return answer


def test_verification_asks_again_when_a_colour_was_busy_and_fails_on_a_server_error() -> None:
    from workbench.deploy.rollout.agreement import check_agreement
    from workbench.deploy.verification import agreement_verdict

    batches = [("sample", {"x": reservoir(64)["x"][:32]}), ("extra", reservoir(128))]
    busy = check_agreement(Answering(), Answering(fail={2: BUSY}), "digits", batches,  # type: ignore[arg-type]
                           min_top1=0.85)
    assert not busy.errors and busy.inconclusive and not busy.passed
    assert busy.verdict.startswith("inconclusive: 1 of 2 sample batches not answered (extra: ")
    pending = agreement_verdict(busy)
    assert pending.ok is None and pending.message.startswith("agreement not checked yet: 1 of 2")
    # the next look finds both colours answering: judged
    done = check_agreement(Answering(), Answering(), "digits", batches, min_top1=0.85)  # type: ignore[arg-type]
    assert done.passed and agreement_verdict(done).ok is True
    # a server error (500) is the candidate's own: the check fails
    broken = ServingError("POST http://candidate/v2/models/digits/infer answered 500: boom",
                          status=500)
    failed = check_agreement(Answering(), Answering(fail={1: broken}), "digits", batches,  # type: ignore[arg-type]
                             min_top1=0.85)
    assert failed.verdict == "failed" and agreement_verdict(failed).ok is False
