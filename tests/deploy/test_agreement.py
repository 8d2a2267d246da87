"""The agreement verdict: enough rows, a confidence interval, and a threshold."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from workbench.deploy.rollout.agreement import AgreementReport, OutputAgreement, wilson_interval
from workbench.deploy.rollout.phases import DEFAULT_MIN_AGREEMENT

if TYPE_CHECKING:
    from pathlib import Path


def report(top1: float, rows: int, min_top1: float = DEFAULT_MIN_AGREEMENT) -> AgreementReport:
    output = OutputAgreement("probabilities", rows, top1, 0.5, 0.01)
    return AgreementReport("digits", "1.0.0", "1.x", ("sample",), rows, (output,), min_top1=min_top1)


def test_wilson_interval_matches_known_values() -> None:
    low, high = wilson_interval(7, 8)
    assert (low, high) == (pytest.approx(0.529, abs=1e-3), pytest.approx(0.978, abs=1e-3))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(379, 400)
    assert low < 379 / 400 < high and high - low < 0.05


def test_eight_rows_are_inconclusive_whatever_they_say() -> None:
    # the old demo sample: 1.2.0 at 87.5% and 1.1.0 at 75% were both judged on 8 rows
    for top1 in (0.875, 0.75):
        verdict = report(top1, 8)
        assert verdict.inconclusive and not verdict.passed
        assert verdict.verdict.startswith("inconclusive: 8 rows compared, at least 100 needed")


def test_the_default_passes_the_better_demo_and_rejects_the_degraded_one() -> None:
    # the demo's figures on its 400-row sample: 1.1.0 agrees ~94.75%, 1.2.0 ~74%
    better, degraded = report(0.9475, 400), report(0.74, 400)
    assert better.passed and better.verdict == "passed (>= 85.0%)"
    assert not degraded.passed and not degraded.inconclusive
    assert degraded.verdict == "below the threshold 85.0%"
    assert "95% CI" in better.summary() and better.to_dict()["interval"][0] >= 0.85


def test_an_interval_across_the_threshold_is_inconclusive() -> None:
    close = report(0.86, 150)
    assert close.inconclusive and "includes the threshold 85.0%" in close.verdict
    assert report(0.5, 8, min_top1=0).passed  # no threshold: nothing to judge


def scored_report(metric: str, value: float, interval: tuple[float, float], rows: int,
                  min_agreement: float = DEFAULT_MIN_AGREEMENT) -> AgreementReport:
    from workbench.model.task import Task
    from workbench.runtime.scoring import ScoreResult, Threshold, agreement_threshold

    task = {"cer": Task.TEXT_RECOGNITION, "box_f1": Task.TEXT_DETECTION}[metric]
    threshold = agreement_threshold(task, min_agreement)
    assert threshold is None if min_agreement <= 0 else threshold.metric == metric
    score = ScoreResult(task, metric, value, interval, rows, threshold, 100)
    output = OutputAgreement("maps", rows, None, 0.5, 0.01, (score,))
    report = AgreementReport("ocr", "1.0.0", "1.x", ("sample",), rows, (output,),
                             min_top1=min_agreement, task=task)
    assert report.score is score
    assert threshold is None or Threshold.parse(str(threshold)) == threshold
    return report


def test_other_tasks_get_the_same_verdicts_on_their_own_score() -> None:
    # min_agreement 0.85 means box_f1 >= 0.85, and for recognition cer <= 0.15
    passed = scored_report("box_f1", 0.95, (0.9, 0.98), 200)
    assert passed.passed and passed.verdict == "passed (box_f1>=0.85)"
    assert "box_f1 0.9500" in passed.summary() and passed.to_dict()["task"] == "text-detection"
    below = scored_report("cer", 0.4, (0.3, 0.5), 200)
    assert not below.passed and below.verdict == "below the threshold cer<=0.15"
    straddle = scored_report("cer", 0.12, (0.08, 0.2), 200)
    assert straddle.inconclusive and "includes the threshold cer<=0.15" in straddle.verdict
    few = scored_report("box_f1", 1.0, (1.0, 1.0), 8)
    assert few.inconclusive and "8 compared, at least 100 needed" in few.verdict
    assert scored_report("cer", 0.5, (0.4, 0.6), 8, min_agreement=0.0).passed  # no threshold


@pytest.mark.slow
def test_recognisers_are_checked_over_http_by_their_codecs(tmp_path: Path) -> None:
    """The verification check between two real instances serving PP-OCRv5's and PP-OCRv4's
    recognisers: outputs of different sizes (18385 vs 6625 classes) decoded by each
    version's codec and judged by CER (min agreement 0.85: cer <= 0.15)."""
    from tests.codecs._ocr import require_exports
    from tests.runtime.test_scoring_ocr import text_lines
    from tests.serving.conftest import ServeProcess
    from workbench.codecs import Codec
    from workbench.deploy.client import ServingClient
    from workbench.deploy.rollout.agreement import check_agreement
    from workbench.model.ocr_exports import write_legacy_configs
    from workbench.model.repository import ModelRepository
    from workbench.model.task import Task
    from workbench.runtime.decoders import codec_decoder
    from workbench.runtime.paddle import PaddleProbe

    exports = require_exports()  # fetched into the cache when missing; a failure under CI=true
    repo = ModelRepository(tmp_path / "repo")
    probe = PaddleProbe()
    repo.publish("rec", "1.0.0", exports.v5_rec, probe=probe)
    configs = write_legacy_configs(exports, tmp_path / "configs")
    repo.publish("rec", "2.0.0", exports.v4_rec, config=configs["rec"], probe=probe)
    common = ["--repo", str(repo.root), "--model", "rec", "--workers", "1", "--no-access-log"]
    servers = [ServeProcess([*common, "--version", v], tmp_path / f"{v}.log")
               for v in ("1.0.0", "2.0.0")]
    _, images = text_lines(32, seed=5)
    batches = [(f"lines {i}", {"x": images[i : i + 8]}) for i in range(0, 32, 8)]
    decode = codec_decoder({v: repo.manifest("rec", v) for v in ("1.0.0", "2.0.0")}, Codec)
    try:
        for server in servers:
            server.start(wait_ready=False)
        for server in servers:
            server.wait_ready()
        with ServingClient(servers[0].url, timeout=60) as stable, \
                ServingClient(servers[1].url, timeout=60) as candidate:
            report = check_agreement(stable, candidate, "rec", batches, min_top1=0.85,
                                     min_rows=32, task=Task.TEXT_RECOGNITION, decode=decode)
            few = check_agreement(stable, candidate, "rec", batches[:1], min_top1=0.85,
                                  min_rows=32, task=Task.TEXT_RECOGNITION, decode=decode)
    finally:
        for server in servers:
            server.stop()
    assert (report.stable_version, report.candidate_version) == ("1.0.0", "2.0.0")
    assert not report.errors, report.errors
    score = report.score
    assert score is not None and score.metric == "cer" and score.n == 32
    assert str(score.threshold) == "cer<=0.15"
    assert report.passed and report.verdict == "passed (cer<=0.15)", report.summary()
    assert report.top1 is None  # no element-wise top-1 between different character sets
    assert few.inconclusive and "8 compared, at least 32 needed" in few.verdict
