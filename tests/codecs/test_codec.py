"""The codec builder and its operations on pure data (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.codecs import _ocr
from workbench.codecs import Codec
from workbench.codecs.cls import Topk
from workbench.codecs.det import DBPostProcess
from workbench.codecs.image import ClsResizeImg, DetResizeForTest, NormalizeImage, RecResizeImg
from workbench.codecs.ocr import OcrChain
from workbench.codecs.rec import CTCLabelDecode
from workbench.errors import CodecError, ImageDecodeError
from workbench.model.task import Task


def test_unknown_operation_is_named_with_the_supported_ones() -> None:
    spec = {"preprocess": [{"DecodeImage": None}, {"WarpAffine": {"size": 3}}],
            "postprocess": {"name": "Topk"}}
    with pytest.raises(CodecError, match=r"unknown preprocess operation 'WarpAffine'; supported: .*DetResizeForTest"):
        Codec(spec)


def test_unknown_postprocess_is_refused() -> None:
    with pytest.raises(CodecError, match="unknown postprocess 'SASTPostProcess'"):
        Codec({"preprocess": [], "postprocess": {"name": "SASTPostProcess"}})


def test_label_encoders_are_skipped_and_the_task_follows_the_postprocess() -> None:
    codec = Codec({"preprocess": [{"DecodeImage": None}, {"DetLabelEncode": None},
                                  {"MultiLabelEncode": {"gtc_encode": "x"}}, {"ToCHWImage": None}],
                   "postprocess": {"name": "DBPostProcess"}})
    assert codec.names == ["DecodeImage", "ToCHWImage"]
    assert codec.task is Task.TEXT_DETECTION


def test_malformed_image_bytes_raise_a_clear_error() -> None:
    codec = Codec({"preprocess": [{"DecodeImage": None}], "postprocess": {"name": "Topk"}})
    with pytest.raises(ImageDecodeError, match="are not an image"):
        codec.prepare(b"\x89PNG not really")
    with pytest.raises(ImageDecodeError, match="empty"):
        codec.prepare(b"")


def test_det_resize_modes_round_to_the_network_stride() -> None:
    image = np.zeros((100, 250, 3), dtype=np.uint8)
    long = DetResizeForTest(resize_long=960)({"image": image})
    assert long["image"].shape[:2] == (384, 1024)  # 384 -> 384, 960 -> 1024 (multiples of 128)
    small = DetResizeForTest(limit_side_len=736, limit_type="min")({"image": image})
    assert small["image"].shape[:2] == (736, 1856)  # 1840 / 32 = 57.5 rounds to 58, as in PaddleOCR
    assert small["shape"][:2] == [100, 250]
    capped = DetResizeForTest(limit_side_len=64, limit_type="max")({"image": image})
    assert capped["image"].shape[:2] == (32, 64)


def test_normalize_parses_fractions_and_orders() -> None:
    norm = NormalizeImage(scale="1./255.", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    out = norm({"image": np.full((2, 2, 3), 255, dtype=np.uint8)})["image"]
    assert out.dtype == np.float32 and np.allclose(out, 1.0)
    with pytest.raises(CodecError, match="scale"):
        NormalizeImage(scale="one/255")


def test_rec_resize_keeps_the_ratio_and_a_batch_is_as_wide_as_its_widest_line() -> None:
    op = RecResizeImg(image_shape=[3, 48, 320])
    short = op.resize(np.full((48, 96, 3), 255, dtype=np.uint8), op.batch_width([2.0]))
    assert short.shape == (3, 48, 320) and np.allclose(short[:, :, :96], 1.0) and not short[:, :, 96:].any()
    codec = Codec({"preprocess": [{"RecResizeImg": {"image_shape": [3, 48, 320]}}],
                   "postprocess": {"name": "CTCLabelDecode", "character_dict": ["a"]}})
    prepared = [codec.prepare(np.zeros((10, 200, 3), np.uint8)), codec.prepare(np.zeros((48, 96, 3), np.uint8))]
    ((indices, batch),) = codec.batches(prepared)
    assert indices == [1, 0] and batch.shape == (2, 3, 48, 960)  # narrowest first; 48 * 20 wide
    assert [i for i, _ in codec.batches(prepared, max_rows=1)] == [[1], [0]]


def test_cls_resize_keeps_the_ratio_pads_short_lines_and_squeezes_long_ones_to_its_width() -> None:
    op = ClsResizeImg(image_shape=[3, 48, 192])
    short = op({"image": np.full((24, 48, 3), 255, dtype=np.uint8)})["image"]  # 2:1 -> 96 wide
    assert short.shape == (3, 48, 192) and np.allclose(short[:, :, :96], 1.0) and not short[:, :, 96:].any()
    line = np.zeros((20, 400, 3), dtype=np.uint8)  # 20:1, longer than 192 / 48
    line[:, 200:] = 255
    long = op({"image": line})["image"]
    assert long.shape == (3, 48, 192)  # squeezed to the width, not stretched in height alone
    assert np.allclose(long[:, :, :90], -1.0) and np.allclose(long[:, :, 102:], 1.0)
    codec = Codec({"preprocess": [{"ClsResizeImg": {"image_shape": [3, 48, 192]}}],
                   "postprocess": {"name": "Topk", "label_list": ["0", "180"]}})
    prepared = [codec.prepare(np.zeros((10, 200, 3), np.uint8)), codec.prepare(np.zeros((48, 96, 3), np.uint8))]
    ((indices, batch),) = codec.batches(prepared)  # a fixed shape: one batch
    assert indices == [0, 1] and batch.shape == (2, 3, 48, 192)


def test_an_ocr_chain_drops_lines_below_the_recognisers_drop_score() -> None:
    det = Codec({"preprocess": [{"DetResizeForTest": {"image_shape": [64, 128]}}, {"ToCHWImage": None}],
                 "postprocess": {"name": "DBPostProcess", "box_thresh": 0.6}})
    prob = np.zeros((1, 1, 64, 128), dtype=np.float32)
    prob[0, 0, 10:20, 10:100] = 0.9
    prob[0, 0, 40:50, 10:100] = 0.9

    def rec_codec(**post: object) -> Codec:
        return Codec({"preprocess": [{"RecResizeImg": {"image_shape": [3, 48, 320]}}],
                      "postprocess": {"name": "CTCLabelDecode", "character_dict": ["a", "b"], **post}})

    def rec(batch: np.ndarray) -> np.ndarray:  # one line sure (a: 0.9), the others not (b: 0.3)
        scores = np.zeros((len(batch), 4, 3), dtype=np.float32)
        scores[:, :, 2] = 0.3
        scores[0, :, 2], scores[0, :, 1] = 0.0, 0.9
        return scores

    image = np.full((64, 128, 3), 255, dtype=np.uint8)
    (kept,) = OcrChain(det, rec_codec()).run([image], lambda _: prob, rec)
    assert sorted(line.text for line in kept) == ["a", "b"]  # PaddleX's default: every line
    (dropped,) = OcrChain(det, rec_codec(drop_score=0.5)).run([image], lambda _: prob, rec)
    assert [line.text for line in dropped] == ["a"]
    (forced,) = OcrChain(det, rec_codec(drop_score=0.5), drop_score=0.0).run([image], lambda _: prob, rec)
    assert len(forced) == 2
    with pytest.raises(CodecError, match="drop_score must be a number from 0 to 1"):
        rec_codec(drop_score=1.5)


def test_ctc_merges_repeats_drops_blanks_and_decides_the_space_by_class_count() -> None:
    decode = CTCLabelDecode(["a", "b"])
    steps = [1, 1, 0, 1, 2, 3, 0]  # a a _ a b ' ' _
    scores = np.zeros((1, len(steps), 4), dtype=np.float32)
    scores[0, np.arange(len(steps)), steps] = 0.5
    (result,) = decode(scores)
    assert result.text == "aab " and result.score == pytest.approx(0.5)
    (no_space,) = decode(scores[:, :3, :3])
    assert no_space.text == "a"
    with pytest.raises(CodecError, match="scores 7 classes"):
        decode(np.zeros((1, 2, 7), dtype=np.float32))


def test_postprocess_in_paddleclas_form() -> None:
    codec = Codec({"preprocess": [], "postprocess": {"Topk": {"topk": 1, "label_list": ["0", "180"]}}})
    assert codec.task is Task.CLASSIFICATION
    (result,) = codec.decode(np.array([[0.2, 0.8]]), [{}])
    assert result.labels == ("180",)


def test_topk_labels_best_first() -> None:
    (result,) = Topk(topk=2, label_list=["0", "180", "90"])(np.array([[0.1, 0.7, 0.2]]))
    assert result.labels == ("180", "90") and result.class_ids == (1, 2)


def test_db_finds_a_rectangle_on_a_synthetic_map() -> None:
    prob = np.zeros((1, 1, 64, 128), dtype=np.float32)
    prob[0, 0, 20:40, 30:100] = 0.9
    (found,) = DBPostProcess(box_thresh=0.6, unclip_ratio=1.5)(prob, [{"shape": [128, 256, 2.0, 2.0]}])
    assert found.boxes.shape == (1, 4, 2)
    # the 70x20 kernel grows by area * 1.5 / perimeter (about 11 map pixels) on each side,
    # and the map is half the source's size
    grow = 69 * 19 * 1.5 / (2 * (69 + 19))
    x0, y0 = found.boxes[0].min(axis=0)
    x1, y1 = found.boxes[0].max(axis=0)
    assert x0 == pytest.approx((30 - grow) * 2, abs=3) and x1 == pytest.approx((99 + grow) * 2, abs=3)
    assert y0 == pytest.approx((20 - grow) * 2, abs=3) and y1 == pytest.approx((39 + grow) * 2, abs=3)
    assert found.scores[0] == pytest.approx(0.9, abs=0.01)


def test_the_v5_exports_build_from_their_inference_yml() -> None:
    _ocr.require_exports()
    det = Codec.from_export(_ocr.V5_DET)
    rec = Codec.from_export(_ocr.V5_REC)
    assert det.task is Task.TEXT_DETECTION and "DetLabelEncode" not in det.names
    assert rec.task is Task.TEXT_RECOGNITION
    assert len(rec.postprocess.characters(18385)) == 18385  # blank + dictionary + space


def test_building_a_codec_and_the_serving_app_import_no_opencv() -> None:
    from tests.cli._modules import loaded_by

    loaded = loaded_by(code=(
        "import workbench.serving.app\n"
        "from workbench.codecs import Codec\n"
        "Codec({'preprocess': [{'DecodeImage': None}], 'postprocess': {'name': 'Topk'}})"
    ))
    assert not loaded & {"cv2", "pyclipper"}
    assert not loaded_by("--help") & {"cv2", "pyclipper"}
