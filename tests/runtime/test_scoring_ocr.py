"""Task-aware scores on real OCR exports: PP-OCRv5 mobile against PP-OCRv4 (RapidOCR's).

Lines and pages of text are rendered with known content and positions, run through
the real recognisers (through the hub and :func:`compare`, decoded by each version's
codec: CTCLabelDecode with its own character table) and detectors (through
``paddle.inference`` directly: PP-OCRv5's detector needs oneDNN off on this CPU build).
The detectors' maps are decoded here by a minimal decoder — a thresholded probability
map cut into connected components, each grown back by an unclip distance — so that a
decoding bug can be staged on them; tests/runtime/test_scoring_codecs.py scores the
codecs' own DBPostProcess boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests._components import require
from tests.codecs._ocr import RAPID, V5, predictor, require_exports
from workbench import ModelRepository, VersionHub, compare
from workbench.model.task import Task
from workbench.runtime.paddle import PaddleProbe
from workbench.runtime.scoring import (
    Threshold,
    box_f1,
    declared_task,
    levenshtein,
    score,
    score_all,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

pytestmark = pytest.mark.slow

V4 = RAPID
FONTS = Path("/usr/share/fonts/truetype")
WORDS = ["hello", "world", "paddle", "canary", "blue", "green", "workbench", "version", "agreement", "stable", "deploy", "model", "serving", "rollout", "threshold", "latency", "image", "text", "box", "score", "digits", "export", "invoice", "total", "amount", "date", "number", "street", "city"]


@pytest.fixture(scope="module", autouse=True)
def _exports() -> None:
    require_exports()  # fetched into the cache first when missing; a failure under CI=true
    require("the DejaVu fonts", (FONTS / "dejavu/DejaVuSans.ttf").is_file())


def _font(name: str, size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(str(FONTS / name), size)


FACES = ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSerif.ttf", "dejavu/DejaVuSansMono.ttf")


def text_lines(count: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``count`` lines of two or three words (some with digits), as the recogniser's input."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    texts, images = [], []
    for i in range(count):
        words = [str(w) for w in rng.choice(WORDS, int(rng.integers(2, 4)))]
        if i % 3 == 0:
            words.append(str(int(rng.integers(10, 99999))))
        text = " ".join(words)
        font = _font(FACES[i % len(FACES)], int(rng.integers(26, 34)))
        width = int(font.getlength(text)) + 16
        image = Image.new("RGB", (width, 48), "white")
        ImageDraw.Draw(image).text((8, 6), text, fill="black", font=font)
        texts.append(text)
        images.append(_rec_input(np.asarray(image)))
    return texts, np.stack(images)


def _rec_input(image: np.ndarray) -> np.ndarray:
    """PaddleOCR's RecResizeImg: height 48, width kept up to 320 and padded, BGR, [-1, 1]."""
    from PIL import Image

    height, width = image.shape[:2]
    new_width = min(320, int(np.ceil(48 * width / height)))
    resized = np.asarray(Image.fromarray(image).resize((new_width, 48)), np.float32)
    out = np.zeros((48, 320, 3), np.float32)
    out[:, :new_width] = (resized[:, :, ::-1] / 255.0 - 0.5) / 0.5
    return out.transpose(2, 0, 1)


def ctc_decode(scores: np.ndarray, characters: Sequence[str]) -> list[str]:
    """Greedy CTC: best class per step, repeats merged, blanks (class 0) dropped."""
    texts = []
    for best in scores.argmax(axis=-1):
        kept = [c for k, c in enumerate(best) if c != 0 and (k == 0 or c != best[k - 1])]
        texts.append("".join(characters[c - 1] for c in kept if c - 1 < len(characters)))
    return texts


def characters_v5() -> list[str]:
    import yaml

    config = yaml.safe_load((V5 / "PP-OCRv5_mobile_rec/inference.yml").read_text("utf-8"))
    return [str(c) for c in config["PostProcess"]["character_dict"]] + [" "]


def characters_v4() -> list[str]:
    lines = (V4 / "ch_ppocr_rec/ppocr_keys_v1.txt").read_text("utf-8").splitlines()
    return [*lines, " "]


@pytest.fixture(scope="module")
def rec_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VersionHub]:
    """PP-OCRv4's recogniser published as rec 1.0.0, PP-OCRv5's as rec 2.0.0."""
    repo = ModelRepository(tmp_path_factory.mktemp("ocr-repo"))
    sample = {"x": text_lines(1, seed=99)[1]}
    probe = PaddleProbe()
    repo.publish("rec", "1.0.0", V4 / "models/ch_PP-OCRv4_rec_infer", sample=sample, probe=probe)
    v5 = repo.publish("rec", "2.0.0", V5 / "PP-OCRv5_mobile_rec", sample=sample, probe=probe)
    assert declared_task(v5) is Task.TEXT_RECOGNITION  # its inference.yml says so
    hub = VersionHub(repo, "rec", device="cpu")
    hub.load("1.0.0")
    hub.load("2.0.0")
    yield hub
    hub.close()


def codec_texts(version: str, out: np.ndarray) -> list[tuple[str, float]]:
    """rec 1.0.0 (PP-OCRv4, no inference.yml: RapidOCR's settings) or 2.0.0 (its export's)."""
    from tests.codecs import _ocr
    from workbench.codecs import Codec

    codec = Codec(_ocr.v4_spec("rec")) if version == "1.0.0" else Codec.from_export(
        V5 / "PP-OCRv5_mobile_rec")
    return [(r.text, r.score) for r in codec.decode(out, [])]


def test_recognisers_compared_by_character_error_rate(rec_hub: VersionHub) -> None:
    texts, images = text_lines(40)
    result = compare(rec_hub, images, labels=texts, batch_size=8, task="text-recognition",
                     decode=codec_texts, thresholds=["cer<=0.05"], min_rows=32)
    assert result.task is Task.TEXT_RECOGNITION
    read = {v: [text for text, _ in result.results[v]] for v in result.versions}
    # both read the rendered text nearly perfectly: the ground truth judges them
    for version in result.versions:
        cer, exact = result.truth[version]
        edits = sum(levenshtein(t, r) for t, r in zip(texts, read[version], strict=True))
        assert cer.value == pytest.approx(edits / sum(map(len, texts)))
        assert cer.metric == "cer" and exact.metric == "exact_match" and cer.n == 40
        assert cer.value < 0.03, (version, cer, read[version])
    (pair,) = result.pairs
    cer, exact = pair.scores
    assert (cer.metric, cer.threshold, cer.verdict) == ("cer", Threshold("cer", 0.05), "pass")
    assert exact.value == pytest.approx(np.mean([a == b for a, b in
                                                 zip(read["1.0.0"], read["2.0.0"], strict=True)]))
    # their raw outputs differ in shape (6625 vs 18385 characters): no element-wise measure
    assert pair.top1 is None and np.isnan(pair.max_abs_diff)
    differ = [i for i, (a, b) in enumerate(zip(read["1.0.0"], read["2.0.0"], strict=True))
              if a != b]
    assert result.disagreements().tolist() == differ
    assert "cer" in result.table().columns[-1] and "cer" in str(result)


def test_a_wrong_character_table_fails_the_recognition_check(rec_hub: VersionHub) -> None:
    # the same v4 scores decoded with v5's table: a version shipped with the wrong codec
    # (decoded by the minimal greedy decoder here: the codec refuses a table of the wrong size)
    texts, images = text_lines(40, seed=1)
    v4 = rec_hub.predict({"x": images}, version="1.0.0").outputs
    scores = next(iter(v4.values()))
    good = [text for text, _ in codec_texts("1.0.0", scores)]
    assert good == ctc_decode(scores, characters_v4())  # the minimal decoder reads alike
    wrong = ctc_decode(scores, characters_v5())
    judged = score_all(Task.TEXT_RECOGNITION, good, wrong,
                       thresholds=[Threshold("cer", 0.05), Threshold("exact_match", 0.8)],
                       min_n=32)
    assert [r.verdict for r in judged] == ["fail", "fail"]
    assert judged[0].value is not None and judged[0].value > 0.5
    assert score(Task.TEXT_RECOGNITION, texts, good, threshold=Threshold("cer", 0.05),
                 min_n=32).verdict == "pass"
    # eight rows cannot be judged, however well they agree
    few = score(Task.TEXT_RECOGNITION, good[:8], good[:8], threshold=Threshold("cer", 0.05),
                min_n=32)
    assert few.verdict == "inconclusive" and few.value == 0.0


# ----------------------------------------------------------------------------- detection


def text_pages(count: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pages of three to six text lines at random places: images and true boxes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    pages, truth = [], []
    for _ in range(count):
        page = Image.new("RGB", (640, 480), "white")
        draw = ImageDraw.Draw(page)
        boxes = []
        for row in range(int(rng.integers(3, 7))):
            text = " ".join(str(w) for w in rng.choice(WORDS, int(rng.integers(1, 3))))
            font = _font(FACES[int(rng.integers(len(FACES)))], int(rng.integers(22, 36)))
            x, y = int(rng.integers(10, 300)), 20 + row * 75 + int(rng.integers(0, 20))
            draw.text((x, y), text, fill="black", font=font)
            left, top, right, bottom = draw.textbbox((x, y), text, font=font)
            boxes.append([[left, top], [right, top], [right, bottom], [left, bottom]])
        pages.append(np.asarray(page, np.float32) / 255.0)
        truth.append(np.array(boxes, float))
    return pages, truth


def _detector(directory: Path) -> Any:
    # PP-OCRv5's detector fails under oneDNN on this CPU build
    return predictor(directory, mkldnn=False, threads=1)


def _probability_map(predictor: Any, page: np.ndarray) -> np.ndarray:
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((page[:, :, ::-1] - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(np.ascontiguousarray(x))
    predictor.run()
    out: np.ndarray = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    return out[0, 0]


def map_to_boxes(probability: np.ndarray, threshold: float = 0.3,
                 unclip: float = 0.6) -> np.ndarray:
    """Connected regions above ``threshold``, each grown by DB's unclip distance.

    The ratio 0.6 (DB's default is 1.5) fits the tight glyph boxes PIL gives as the truth:
    at 1.5 the grown boxes overlap them by IoU 0.42-0.71, at 0.6 by 0.70-0.97.
    """
    from scipy import ndimage

    labels, _ = ndimage.label(probability > threshold)
    boxes = []
    for rows, cols in ndimage.find_objects(labels):
        width, height = cols.stop - cols.start, rows.stop - rows.start
        if width * height < 10:
            continue
        grow = width * height * unclip / (2 * (width + height))
        x0, y0, x1, y1 = cols.start - grow, rows.start - grow, cols.stop + grow, rows.stop + grow
        boxes.append([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return np.array(boxes, float).reshape(-1, 4, 2)


@pytest.fixture(scope="module")
def maps() -> dict[str, Any]:
    require("the PaddleOCR detectors", (V5 / "PP-OCRv5_mobile_det").is_dir()
            and (V4 / "models/ch_PP-OCRv4_det_infer").is_dir(), f"looked in {V5} and {V4}")
    pages, truth = text_pages(12)
    v4, v5 = _detector(V4 / "models/ch_PP-OCRv4_det_infer"), _detector(V5 / "PP-OCRv5_mobile_det")
    return {"truth": truth, "pages": pages, "v5_predictor": v5,
            "v4": [_probability_map(v4, p) for p in pages],
            "v5": [_probability_map(v5, p) for p in pages]}


def test_detectors_compared_by_box_f1(maps: dict[str, Any]) -> None:
    truth = maps["truth"]
    v4 = [map_to_boxes(m) for m in maps["v4"]]
    v5 = [map_to_boxes(m) for m in maps["v5"]]
    lines = sum(len(t) for t in truth)
    # each finds the rendered lines (against the truth) ...
    for found in (v4, v5):
        against_truth = box_f1(truth, found)
        assert against_truth.value is not None and against_truth.value >= 0.9, against_truth
        assert against_truth.details["reference_boxes"] == lines
    # ... and they agree with each other
    agree = score(Task.TEXT_DETECTION, v4, v5, threshold=Threshold("box_f1", 0.8))
    assert agree.value is not None and agree.value >= 0.9 and agree.n == 12
    assert agree.interval is not None and agree.interval[0] <= agree.value <= agree.interval[1]
    assert agree.verdict == "pass", agree


def test_boxes_left_in_the_resized_frame_fail_the_box_check(maps: dict[str, Any]) -> None:
    # a codec bug: the page resized to a long side of 1280 (DetResizeForTest) and the boxes
    # not scaled back to the page: the same lines found, in the wrong place
    from PIL import Image

    good = [map_to_boxes(m) for m in maps["v5"]]
    resized = [np.asarray(Image.fromarray((p * 255).astype(np.uint8)).resize((1280, 960)),
                          np.float32) / 255.0 for p in maps["pages"][:6]]
    unscaled = [map_to_boxes(_probability_map(maps["v5_predictor"], p)) for p in resized]
    assert sum(map(len, unscaled)) == sum(map(len, good[:6]))  # every line still found
    judged = score(Task.TEXT_DETECTION, good[:6], unscaled, threshold=Threshold("box_f1", 0.9))
    assert judged.value is not None and judged.value < 0.5, judged
    assert judged.verdict == "fail"
    # scaled back, they match again
    scaled = [b / 2 for b in unscaled]
    assert (score(Task.TEXT_DETECTION, good[:6], scaled).value or 0) >= 0.9
