"""The scores on what the codecs decode: PP-OCRv5 against PP-OCRv4, DBPostProcess boxes and
CTCLabelDecode texts, through the codecs built from the exports (see tests/codecs/_ocr.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.codecs import _ocr
from workbench.codecs import Codec
from workbench.model.task import Task
from workbench.runtime.scoring import Threshold, differing, polygon_iou, score, score_all


def test_polygon_iou_matches_shapely_on_rotated_boxes() -> None:
    from shapely.geometry import Polygon

    rng = np.random.default_rng(7)
    for _ in range(200):
        quads = []
        for _ in range(2):
            centre = rng.uniform(0, 20, 2)
            width, height = rng.uniform(1, 12, 2)
            angle = rng.uniform(0, np.pi)
            turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [width / 2, height / 2]
            quads.append(corners @ turn.T + centre)
        a, b = Polygon(quads[0]), Polygon(quads[1])
        expected = a.intersection(b).area / a.union(b).area
        assert polygon_iou(quads[0], quads[1]) == pytest.approx(expected, abs=1e-9)


@pytest.fixture(scope="module")
def exports() -> None:
    _ocr.require_exports()
    _ocr.require_fonts()


@pytest.mark.slow
def test_codec_boxes_of_two_detectors_score_by_box_f1(exports: None) -> None:
    v4 = Codec(_ocr.v4_spec("det"))
    v5 = Codec.from_export(_ocr.V5_DET)
    run_v4 = _ocr.run_fn(_ocr.V4_DET)
    run_v5 = _ocr.run_fn(_ocr.V5_DET, mkldnn=False)  # PP-OCRv5 det fails under oneDNN on CPU
    pages, truth = [], []
    for index, font in enumerate(_ocr.FONT_FILES):
        page, lines = _ocr.render_page(_ocr.LINES[index::2], font)
        pages.append(page)
        truth.append(np.array([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
                               for _, (x0, y0, x1, y1) in lines], float))
    found_v4 = [r.boxes for r in v4.run(pages, run_v4)]
    found_v5 = [r.boxes for r in v5.run(pages, run_v5)]
    # PP-OCRv5 finds every rendered line, one box each
    against_truth = score(Task.TEXT_DETECTION, truth, found_v5)
    assert against_truth.value == 1.0 and against_truth.details["reference_boxes"] == 14
    # PP-OCRv4 (RapidOCR's settings) cuts the monospaced and bold lines into words: on those
    # pages the two versions disagree, and box F1 says so where top-1 could not
    agree = score(Task.TEXT_DETECTION, found_v4, found_v5, threshold=Threshold("box_f1", 0.9))
    assert differing(Task.TEXT_DETECTION, found_v4, found_v5).tolist() == [2, 3]
    assert agree.n == 4 and agree.value is not None and 0.3 < agree.value < 0.8, agree
    assert agree.details["candidate_boxes"] == 14 and agree.details["reference_boxes"] > 14
    # ... yet four pages cannot settle it: two agree fully, so a resample of those alone
    # reaches 1.0 and the interval straddles the threshold
    assert agree.interval is not None and agree.interval[1] == 1.0
    assert agree.verdict == "inconclusive", agree
    same_font = score(Task.TEXT_DETECTION, found_v4[:2], found_v5[:2])
    assert same_font.value == 1.0
    # a detector that finds nothing scores 0
    nothing = [np.zeros((0, 4, 2)) for _ in pages]
    assert score(Task.TEXT_DETECTION, found_v5, nothing).value == 0.0


@pytest.mark.slow
def test_codec_texts_of_two_recognisers_score_by_cer(exports: None) -> None:
    v4 = Codec(_ocr.v4_spec("rec"))
    v5 = Codec.from_export(_ocr.V5_REC)
    run_v4, run_v5 = _ocr.run_fn(_ocr.V4_REC), _ocr.run_fn(_ocr.V5_REC)
    truth = [text for _ in _ocr.FONT_FILES for text in _ocr.LINES]
    lines = [_ocr.render_line(text, font) for font in _ocr.FONT_FILES for text in _ocr.LINES]
    read_v4 = [r.text for r in v4.run(lines, run_v4)]
    read_v5 = [(r.text, r.score) for r in v5.run(lines, run_v5)]  # (text, score) pairs too
    bounds = [Threshold("cer", 0.05), Threshold("exact_match", 0.5)]
    for read in (read_v4, read_v5):
        cer, exact = score_all(Task.TEXT_RECOGNITION, truth, read, thresholds=bounds, min_n=32)
        assert cer.n == 32 and cer.value is not None and cer.value <= 0.05, (cer, read)
        assert cer.verdict in ("pass", "inconclusive"), cer
    cer, exact = score_all(Task.TEXT_RECOGNITION, read_v4, read_v5, thresholds=bounds, min_n=32)
    assert cer.value is not None and cer.value <= 0.05 and cer.verdict != "fail", cer
    assert exact.value == pytest.approx(np.mean([a == b for a, (b, _) in
                                                 zip(read_v4, read_v5, strict=True)]))
