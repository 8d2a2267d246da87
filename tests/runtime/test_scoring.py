"""Task-aware scores on values worked out by hand: IoU, F1, CER, intervals, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import InputError
from workbench.model.task import Task
from workbench.runtime.scoring import (
    ScoreResult,
    Threshold,
    box_f1,
    character_error_rate,
    differing,
    exact_match,
    levenshtein,
    polygon_iou,
    score,
    score_all,
    top1,
    wilson_interval,
    within_tolerance,
)


def square(x: float, y: float, side: float = 2.0) -> np.ndarray:
    return np.array([[x, y], [x + side, y], [x + side, y + side], [x, y + side]], float)


def test_polygon_iou_of_known_overlaps() -> None:
    a = square(0, 0)
    assert polygon_iou(a, a) == pytest.approx(1.0)
    # shifted by one: overlap 2, union 6
    assert polygon_iou(a, square(1, 0)) == pytest.approx(2 / 6)
    # a quarter: overlap 1, union 7
    assert polygon_iou(a, square(1, 1)) == pytest.approx(1 / 7)
    assert polygon_iou(a, square(5, 5)) == 0.0
    # orientation does not matter
    assert polygon_iou(a[::-1], square(1, 0)) == pytest.approx(2 / 6)
    # a diamond inscribed in the 2x2 square: area 2, inside it, IoU 2/4
    diamond = np.array([[1, 0], [2, 1], [1, 2], [0, 1]], float)
    assert polygon_iou(a, diamond) == pytest.approx(0.5)
    assert polygon_iou(a, np.zeros((4, 2))) == 0.0


def test_box_f1_counts_one_to_one_matches_at_half_iou() -> None:
    # image 1: two reference boxes, one found exactly, one found at IoU 1/3 (a miss)
    # image 2: one reference box found, plus a spurious candidate box
    reference = [np.stack([square(0, 0), square(10, 0)]), np.stack([square(0, 0)])]
    candidate = [np.stack([square(0, 0), square(11, 0)]),
                 np.stack([square(0.2, 0), square(20, 20)])]
    result = box_f1(reference, candidate)
    # TP 2, FP 2, FN 1 -> F1 = 4 / (4 + 2 + 1)
    assert result.value == pytest.approx(4 / 7)
    assert result.details["precision"] == pytest.approx(0.5)
    assert result.details["recall"] == pytest.approx(2 / 3)
    assert result.task is Task.TEXT_DETECTION and result.n == 2
    low, high = result.interval or (0, 0)
    assert low <= result.value <= high
    # one candidate box cannot match two reference boxes
    dup = box_f1([np.stack([square(0, 0), square(0, 0)])], [np.stack([square(0, 0)])])
    assert dup.value == pytest.approx(2 / 3)
    # nothing on either side is agreement; nothing found against something is not
    empty = np.zeros((0, 4, 2))
    assert box_f1([empty], [empty]).value == 1.0
    assert box_f1([np.stack([square(0, 0)])], [empty]).value == 0.0
    assert differing(Task.TEXT_DETECTION, reference, candidate).tolist() == [0, 1]


def test_character_error_rate_and_exact_match_by_hand() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0
    reference = ["kitten", "hello", "abc"]
    candidate = [("sitting", 0.9), ("hello", 0.99), "ab"]  # (text, score) or text
    cer = character_error_rate(reference, candidate)
    assert cer.value == pytest.approx((3 + 0 + 1) / (6 + 5 + 3))
    assert cer.details["edits"] == 4
    assert cer.interval is not None and cer.interval[0] <= cer.value <= cer.interval[1]
    match = exact_match(reference, candidate)
    assert match.value == pytest.approx(1 / 3)
    assert match.interval == pytest.approx(wilson_interval(1, 3))
    assert differing("text-recognition", reference, candidate).tolist() == [0, 2]
    # the same texts: no error, a point interval at 0
    same = character_error_rate(reference, reference)
    assert same.value == 0.0 and same.interval == (0.0, 0.0)


def test_top1_is_todays_measure() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.9, 0.1]])
    b = np.array([[1.0, 0.0], [1.0, 0.0], [0.2, 0.8], [0.6, 0.4]])
    result = top1(a, b)
    assert result.value == 0.75 and result.n == 4
    assert result.interval == wilson_interval(3, 4)
    # label ids and scores mix: ground truth labels against a candidate's scores
    assert top1(np.array([0, 1, 1, 0]), b).value == 0.75
    with pytest.raises(InputError, match="differ in shape"):
        top1(a, b[:2])


def test_within_tolerance_reports_max_abs_and_relative_error() -> None:
    reference = np.array([[1.0, 2.0], [10.0, 0.0], [5.0, 5.0]])
    candidate = reference + np.array([[0.0005, 0.0], [0.1, 0.0], [0.0, 0.0]])
    result = within_tolerance(reference, candidate, rtol=1e-3, atol=1e-6)
    assert result.value == pytest.approx(2 / 3)
    assert result.details["max_abs_diff"] == pytest.approx(0.1)
    assert result.details["max_rel_diff"] == pytest.approx(0.01)
    assert differing("generic", reference, candidate, rtol=1e-3, atol=1e-6).tolist() == [1]


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(7, 8) == (pytest.approx(0.529, abs=1e-3), pytest.approx(0.978, abs=1e-3))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_thresholds_parse_in_the_metrics_direction() -> None:
    assert Threshold.parse("cer<=0.05") == Threshold("cer", 0.05)
    assert Threshold.parse(" box_f1 >= 0.9 ") == Threshold("box_f1", 0.9)
    assert Threshold.parse("top1>=85%") == Threshold("top1", 0.85)
    assert str(Threshold("cer", 0.05)) == "cer<=0.05"
    with pytest.raises(InputError, match="cer is bounded with <="):
        Threshold.parse("cer>=0.05")
    with pytest.raises(InputError, match="unknown metric 'wer'"):
        Threshold.parse("wer<=0.1")
    with pytest.raises(InputError, match="not a threshold"):
        Threshold.parse("cer < 0.1")
    with pytest.raises(InputError, match="in 0..1"):
        Threshold("top1", 1.5)


def verdict(metric: str, value: float, interval: tuple[float, float], n: int,
            threshold: str, min_n: int = 1) -> ScoreResult:
    return ScoreResult(Task.GENERIC, metric, value, interval, n, Threshold.parse(threshold), min_n)


def test_verdicts_follow_the_interval_and_the_minimum_rows() -> None:
    # higher is better: the lower bound must clear the threshold, the upper must reach it
    assert verdict("top1", 0.95, (0.92, 0.97), 400, "top1>=0.85").verdict == "pass"
    assert verdict("top1", 0.74, (0.70, 0.78), 400, "top1>=0.85").verdict == "fail"
    straddle = verdict("top1", 0.86, (0.79, 0.91), 150, "top1>=0.85")
    assert straddle.verdict == "inconclusive" and "includes the threshold" in straddle.reason
    # lower is better: the upper bound must stay under the threshold
    assert verdict("cer", 0.01, (0.005, 0.02), 100, "cer<=0.05").verdict == "pass"
    assert verdict("cer", 0.2, (0.1, 0.3), 100, "cer<=0.05").verdict == "fail"
    assert verdict("cer", 0.04, (0.02, 0.07), 100, "cer<=0.05").verdict == "inconclusive"
    few = verdict("cer", 0.0, (0.0, 0.0), 8, "cer<=0.05", min_n=32)
    assert few.verdict == "inconclusive" and few.reason == "8 compared, at least 32 needed"
    assert few.bound == 0.0
    unjudged = ScoreResult(Task.GENERIC, "cer", 0.1, (0.0, 0.2), 5)
    assert unjudged.verdict == "no threshold" and unjudged.bound == 0.2
    assert "cer 0.1000 (95% CI 0.0000..0.2000) on 5" in str(unjudged)


def test_small_samples_are_inconclusive_through_the_interval_alone() -> None:
    # 8 of 8 texts read alike: the Wilson lower bound (67.6%) cannot clear 80%
    texts = ["a"] * 8
    result = score_all("text-recognition", texts, texts, thresholds=[Threshold("exact_match", 0.8)])
    assert [r.metric for r in result] == ["cer", "exact_match"]
    assert result[1].verdict == "inconclusive" and result[0].verdict == "no threshold"
    many = ["a"] * 60
    assert score("text-recognition", many, many, threshold=Threshold("exact_match", 0.8)
                 ).verdict == "pass"
    with pytest.raises(InputError, match="not measured by box_f1"):
        score_all("text-recognition", texts, texts, thresholds=[Threshold("box_f1", 0.9)])


def test_bootstrap_interval_is_reproducible_and_narrows_with_more_images() -> None:
    rng = np.random.default_rng(0)
    refs = ["".join(rng.choice(list("abcdef"), 10)) for _ in range(200)]
    cands = [r if i % 10 else r[:-1] + "z" for i, r in enumerate(refs)]  # 1 edit in 10 images
    small = character_error_rate(refs[:20], cands[:20])
    large = character_error_rate(refs, cands)
    assert large.value == pytest.approx(20 / 2000)
    assert character_error_rate(refs, cands).interval == large.interval
    assert small.interval and large.interval
    assert large.interval[1] - large.interval[0] < small.interval[1] - small.interval[0]
    judged = large.judged(Threshold("cer", 0.05), min_n=32)
    assert judged.verdict == "pass" and judged.to_dict()["threshold"] == "cer<=0.05"


def test_a_manifest_that_says_only_generic_leaves_the_task_to_the_outputs_shape() -> None:
    from workbench.model.manifest import Manifest, TensorSpec
    from workbench.runtime.scoring import agreement_threshold, declared_task, guessed_task

    spec = (TensorSpec("x", "float32", (-1, 64)),)
    plain = Manifest("m", "1.0.0", "pir", (), spec, spec, "2026-12-06T00:00:00+00:00")
    assert plain.task is Task.GENERIC and declared_task(plain) is None
    reader = Manifest("m", "1.0.0", "pir", (), spec, spec, "2026-12-06T00:00:00+00:00",
                      task=Task.TEXT_RECOGNITION)
    assert declared_task(reader) is Task.TEXT_RECOGNITION
    assert guessed_task(np.zeros((4, 10))) is Task.CLASSIFICATION  # class scores: top-1
    assert guessed_task(np.zeros((4, 1))) is Task.GENERIC
    assert guessed_task(np.zeros(4)) is Task.GENERIC
    # the deploy check's one number, per task
    assert agreement_threshold(Task.CLASSIFICATION, 0.85) == Threshold("top1", 0.85)
    assert agreement_threshold(Task.TEXT_DETECTION, 0.85) == Threshold("box_f1", 0.85)
    assert agreement_threshold(Task.TEXT_RECOGNITION, 0.85) == Threshold("cer", 0.15)
    assert agreement_threshold(Task.GENERIC, 0.0) is None


def test_codec_decoder_turns_raw_outputs_into_texts_and_boxes() -> None:
    from workbench.codecs import Codec
    from workbench.model.manifest import Manifest, TensorSpec
    from workbench.runtime.decoders import codec_decoder

    spec = (TensorSpec("x", "float32", (-1, 3, 48, 320)),)

    def manifest(task: Task, codec: dict[str, object] | None) -> Manifest:
        return Manifest("m", "1.0.0", "pir", (), spec, spec, "2026-12-06T00:00:00+00:00",
                        task=task, codec=codec)

    rec = {"preprocess": [], "postprocess": {"name": "CTCLabelDecode",
                                             "character_dict": ["a", "b", "c"],
                                             "use_space_char": False}}
    decode = codec_decoder({"1.0.0": manifest(Task.TEXT_RECOGNITION, rec)}, Codec)
    assert decode is not None
    steps = np.eye(4)[[1, 1, 0, 2, 3, 3, 0]][None]  # a a _ b c c _ -> "abc"
    assert decode("1.0.0", steps) == ["abc"]
    det = {"preprocess": [], "postprocess": {"name": "DBPostProcess", "thresh": 0.3,
                                             "box_thresh": 0.5, "unclip_ratio": 1.5}}
    decode = codec_decoder({"2.0.0": manifest(Task.TEXT_DETECTION, det)}, Codec)
    assert decode is not None
    prob = np.zeros((1, 1, 64, 96), np.float32)
    prob[0, 0, 20:30, 10:70] = 0.9
    (boxes,) = decode("2.0.0", prob)
    assert boxes.shape == (1, 4, 2)
    assert boxes[0, :, 0].min() < 10 and boxes[0, :, 0].max() > 70  # grown by the unclip
    # a version without a codec, or of another task: nothing to decode with
    assert codec_decoder({"1.0.0": manifest(Task.TEXT_RECOGNITION, None)}, Codec) is None
    assert codec_decoder({"1.0.0": manifest(Task.TEXT_RECOGNITION, rec),
                          "2.0.0": manifest(Task.GENERIC, None)}, Codec) is None


def test_row_scores_are_each_row_s_own_score_in_0_1() -> None:
    from workbench.runtime.scoring import Page, row_scores

    assert row_scores("classification", [1, 2, 3], [1, 0, 3]) == [1.0, 0.0, 1.0]
    # CER per text, over its own characters, capped at 1 (pages of garbage count as 1)
    assert row_scores("text-recognition", ["abcd", "ab", "a"], ["abcx", "ab", "zzzzzz"]) == [
        0.25, 0.0, 1.0]
    assert row_scores("ocr", [Page(("ab", "cd"))], ["ab\ncx"]) == [pytest.approx(1 / 5)]
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    far = square + 100
    boxes = row_scores("text-detection", [np.stack([square, far]), np.zeros((0, 4, 2))],
                       [np.stack([square]), np.zeros((0, 4, 2))])
    assert boxes == [pytest.approx(2 / 3), 1.0]  # one of two found: F1 2/3; none and none: 1
    assert row_scores("generic", np.zeros((2, 3)), np.array([[0, 0, 0], [0, 1, 0]])) == [1.0, 0.0]
