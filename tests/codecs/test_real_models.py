"""The codecs on the real exports agree with RapidOCR's own pre/post-processing.

RapidOCR's classes are imported from its unzipped wheel and run in-process on the same
rendered images and the same PP-OCRv4 weights; our codecs (built from a codec dict
equal to RapidOCR's config.yaml) drive the same weights through paddle.inference.
The PP-OCRv5 chain (codecs from the exports' inference.yml) is judged on ground truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.codecs import _ocr
from workbench.codecs import Codec
from workbench.codecs.ocr import OcrChain

pytestmark = pytest.mark.slow

PAGES = [(font, _ocr.LINES[i::2]) for i, font in enumerate(_ocr.FONT_FILES[:2])] + [
    (_ocr.FONT_FILES[2], _ocr.LINES[:4]), (_ocr.FONT_FILES[3], _ocr.LINES[4:]),
]


@pytest.fixture(scope="module")
def rapid() -> object:
    _ocr.require_exports()
    _ocr.require_fonts()
    return _ocr.rapidocr()()


def quad_iou(a: np.ndarray, b: np.ndarray) -> float:
    from shapely.geometry import Polygon

    pa, pb = Polygon(a), Polygon(b)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union else 0.0


def test_v4_det_boxes_match_rapidocr(rapid: object) -> None:
    codec = Codec(_ocr.v4_spec("det"))
    predict = _ocr.run_fn(_ocr.V4_DET)
    for font, lines in PAGES:
        page, _ = _ocr.render_page(lines, font)
        ours = codec.run([_ocr.png(page)], predict)[0]
        theirs, _ = rapid.text_det(page)  # type: ignore[attr-defined]
        assert len(ours.boxes) == len(theirs) >= len(lines), font  # a monospaced line may split
        for box in theirs:
            best = max(quad_iou(box, mine) for mine in ours.boxes)
            assert best >= 0.9, (font, box, best)


def test_v4_rec_texts_match_rapidocr(rapid: object) -> None:
    codec = Codec(_ocr.v4_spec("rec"))
    predict = _ocr.run_fn(_ocr.V4_REC)
    for font in _ocr.FONT_FILES:
        for text in _ocr.LINES:
            line = _ocr.render_line(text, font)
            (ours,) = codec.run([line], predict)
            ((their_text, their_score),), _ = rapid.text_rec([line])  # type: ignore[attr-defined]
            assert ours.text == their_text, (font, text)
            assert ours.score == pytest.approx(their_score, abs=1e-3)


def test_v4_chain_reads_what_rapidocr_reads(rapid: object) -> None:
    chain = OcrChain(Codec(_ocr.v4_spec("det")), Codec(_ocr.v4_spec("rec")), Codec(_ocr.v4_cls_spec()))
    det, rec, cls = _ocr.run_fn(_ocr.V4_DET), _ocr.run_fn(_ocr.V4_REC), _ocr.run_fn(_ocr.V4_CLS)
    for font, lines in PAGES:
        page, _ = _ocr.render_page(lines, font)
        (ours,) = chain.run([page], det, rec, cls)
        theirs, _ = rapid(page)  # type: ignore[operator]
        assert [line.text.strip() for line in ours] == [text.strip() for _, text, _ in theirs], font
        for line, (box, _, _) in zip(ours, theirs, strict=True):
            assert quad_iou(line.box, np.array(box)) >= 0.9


def chain_cer(chain: OcrChain, det: object, rec: object) -> float:
    errors = chars = 0.0
    for font, lines in PAGES:
        page, truth = _ocr.render_page(lines, font)
        (found,) = chain.run([_ocr.png(page)], det, rec)  # type: ignore[arg-type]
        read = " ".join(line.text.strip() for line in found)
        expected = " ".join(text for text, _ in truth)
        errors += _ocr.cer(expected, read) * len(expected)
        chars += len(expected)
    return errors / chars


def test_v5_chain_reads_rendered_pages_within_5_percent_cer(rapid: object) -> None:
    chain = OcrChain(Codec.from_export(_ocr.V5_DET), Codec.from_export(_ocr.V5_REC))
    det = _ocr.run_fn(_ocr.V5_DET, mkldnn=False)  # PP-OCRv5 det fails under oneDNN on CPU
    rec = _ocr.run_fn(_ocr.V5_REC)
    v5 = chain_cer(chain, det, rec)
    v4 = chain_cer(OcrChain(Codec(_ocr.v4_spec("det")), Codec(_ocr.v4_spec("rec"))),
                   _ocr.run_fn(_ocr.V4_DET), _ocr.run_fn(_ocr.V4_REC))
    print(f"CER on {len(PAGES)} rendered pages: PP-OCRv5 {v5:.2%}, PP-OCRv4 {v4:.2%}")
    assert v5 <= 0.05
    assert v4 <= 0.05
