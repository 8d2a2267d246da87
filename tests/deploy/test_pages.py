"""OCR pipelines in the deploy layer: BYTES in the client, labelled OCR sets, pages scored.

The live canary of real pipelines is tests/deploy/test_ocr_canary_live.py; here the pieces
it stands on, each with inputs whose answer is known.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from workbench.deploy.client import ServingClient, decode_outputs, encode_inputs
from workbench.deploy.rollout.analysis import AccuracyRule
from workbench.deploy.rollout.pages import load_images, ocr_check, pages_agreement, read_page
from workbench.deploy.rollout.signals import OutputCheck
from workbench.errors import DeployError, ServingError
from workbench.model.task import Task
from workbench.runtime import scoring
from workbench.runtime.scoring import Page

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n"  # enough of a PNG for the set's checks (the server never decodes)
TOKEN = "secret-token"


def test_bytes_inputs_go_base64_and_text_outputs_come_back() -> None:
    images = np.empty(2, dtype=np.object_)
    images[:] = [PNG + b"one", PNG + b"\x00two"]
    (encoded,) = encode_inputs({"image": images})["inputs"]
    assert encoded["datatype"] == "BYTES" and encoded["shape"] == [2]
    assert encoded["parameters"] == {"content_type": "base64"}
    assert [base64.b64decode(d) for d in encoded["data"]] == list(images)
    # the reservoir's rows come back as they were sent; text outputs as strings
    back = decode_outputs({"outputs": [{**encoded, "name": "image"},
                                       {"name": "text", "datatype": "BYTES", "shape": [1, 2],
                                        "data": ["Total: 13 €", ""]}]})
    assert back["image"].tolist() == list(images)
    assert back["text"].shape == (1, 2) and back["text"].tolist() == [["Total: 13 €", ""]]
    mixed = np.empty(2, dtype=np.object_)
    mixed[:] = [b"x", "y"]
    with pytest.raises(ValueError, match="all be bytes or all be strings"):
        encode_inputs({"image": mixed})
    with pytest.raises(ValueError, match="not valid base64"):
        decode_outputs({"outputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"content_type": "base64"}, "data": ["%%"]}]})


def test_ocr_pages_are_scored_by_cer_and_box_f1() -> None:
    box = np.array([[0, 0], [10, 0], [10, 5], [0, 5]], float)
    other = box + 100
    stable = [Page(("Total: 13", "EUR"), np.stack([box, other])), Page(("abcd",), box[None])]
    same = scoring.score_all(Task.OCR, stable, stable)
    assert [(r.metric, r.value) for r in same] == [("cer", 0.0), ("box_f1", 1.0), ("exact_match", 1.0)]
    assert all(r.task is Task.OCR for r in same)
    # one character wrong of 13 + 4 (the newline counts), one box lost of three
    worse = [Page(("Total: 18", "EUR"), box[None]), Page(("abcd",), box[None])]
    cer, f1, exact = scoring.score_all(Task.OCR, stable, worse)
    assert cer.value == pytest.approx(1 / 17) and f1.value == pytest.approx(0.8)
    assert exact.value == 0.5
    # ground truth is text only: CER, and no box F1
    truth = [Page(("Total: 13", "EUR")), "abcd"]
    cer, f1, _ = scoring.score_all(Task.OCR, truth, worse)
    assert cer.value == pytest.approx(1 / 17) and f1.value is None
    assert scoring.agreement_threshold(Task.OCR, 0.85) == scoring.Threshold("cer", 0.15)
    assert scoring.differing(Task.OCR, stable, worse).tolist() == [0]


def test_a_pipeline_answer_reads_as_a_page() -> None:
    text = np.empty(2, dtype=np.object_)
    text[:] = ["Hello", "World"]
    page = read_page({"text": text, "boxes": np.zeros((2, 4, 2), np.float32),
                      "image_index": np.zeros(2, np.int32)})
    assert page.lines == ("Hello", "World") and page.text == "Hello\nWorld"
    with pytest.raises(ServingError, match="no 'text' output"):
        read_page({"probabilities": np.zeros((1, 10))})


def labelled_set(folder: Path, texts: Any = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.png").write_bytes(PNG + b"a")
    (folder / "b.png").write_bytes(PNG + b"b")
    if texts is not None:
        (folder / "texts.json").write_text(texts if isinstance(texts, str) else json.dumps(texts))
    return folder


def test_a_labelled_ocr_set_is_images_and_their_lines(tmp_path: Path) -> None:
    folder = labelled_set(tmp_path / "set", {"a.png": ["Hello", "World"], "b.png": "One\nTwo"})
    images = load_images(folder, labelled=True)
    assert images.names == ("a.png", "b.png") and images.images == (PNG + b"a", PNG + b"b")
    assert [p.text for p in images.truths] == ["Hello\nWorld", "One\nTwo"]
    sample = load_images(labelled_set(tmp_path / "plain"))  # a sample: images, no truth
    assert sample.names == ("a.png", "b.png") and not sample.labelled


@pytest.mark.parametrize(("texts", "message"), [
    (None, "has no texts.json"),
    ("{not json", "cannot read"),
    ({"a.png": ["x"], "c.png": ["y"]}, "names 'c.png', which is not an image"),
    ({"a.png": [1, 2]}, "the lines of 'a.png' must be a list of strings"),
    ([], "must map each image's file name to its lines"),
])
def test_a_bad_labelled_ocr_set_is_one_sentence(tmp_path: Path, texts: Any, message: str) -> None:
    folder = labelled_set(tmp_path / "set", texts)
    with pytest.raises(DeployError, match=message) as caught:
        load_images(folder, labelled=True)
    assert "\n" not in str(caught.value)


def test_an_image_set_holds_images(tmp_path: Path) -> None:
    folder = labelled_set(tmp_path / "set", {"a.png": ["x"], "notes.txt": ["y"]})
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(DeployError, match="notes.txt is not an image"):
        load_images(folder)
    with pytest.raises(DeployError, match="is not a directory"):
        load_images(tmp_path / "nothing")


def test_accuracy_of_a_pipeline_is_its_cer_against_stables_in_points() -> None:
    def check(stable: float, candidate: float) -> OutputCheck:
        truth = [scoring.ScoreResult(Task.OCR, "cer", value, None, 3) for value in (stable, candidate)]
        return OutputCheck(rows=3, agreement=None, accuracy_stable=None, accuracy_candidate=None,
                           truth_stable=truth[0], truth_candidate=truth[1])

    from tests.deploy.test_analysis import seen, window

    rule = AccuracyRule(max_drop=5)
    better = rule.judge(seen(window(), output=check(0.088, 0.0)))
    assert better.verdict == "pass" and better.value == pytest.approx(-8.8)
    assert better.message == "CER 0.0% vs stable 8.8% on 3 images: down 8.8 points (max rise 5)"
    worse = rule.judge(seen(window(), output=check(0.0, 0.92)))
    assert worse.verdict == "fail" and worse.sustained and worse.value == pytest.approx(92.0)
    assert worse.message == "CER 92.0% vs stable 0.0% on 3 images: up 92.0 points (max rise 5)"


class _Pipeline(BaseHTTPRequestHandler):
    """Answers an image the way a pipeline does: one line per image, read as the image's
    bytes after the PNG signature (``shift``: each character read as the next one)."""

    protocol_version = "HTTP/1.1"
    server: Any

    def _send(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v2/admin/reservoir" and self.headers.get("authorization") == f"Bearer {TOKEN}":
            rows = [base64.b64encode(PNG + t).decode() for t in (b"seen", b"live")]
            return self._send(200, {"model": "ocr", "seen": 2, "rows": 2, "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [2],
                 "parameters": {"content_type": "base64"}, "data": rows}]})
        return self._send(404, {"error": "no route"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        (item,) = body["inputs"]
        self.server.requests.append(self.headers.get("x-workbench-replay"))
        image = base64.b64decode(item["data"][0])
        text = image[len(PNG):].decode()
        if "fail" in text and self.server.shift:
            return self._send(500, {"error": "candidate fails this one"})
        if self.server.shift:
            text = "".join(chr(ord(c) + 1) for c in text)
        self._send(200, {"model_name": "ocr", "outputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]},
            {"name": "boxes", "datatype": "FP32", "shape": [1, 4, 2], "data": [0, 0, 10, 0, 10, 5, 0, 5]},
            {"name": "image_index", "datatype": "INT32", "shape": [1], "data": [0]}]})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pipelines() -> Iterator[dict[str, str]]:
    """Two loopback servers answering like pipelines: ``stable`` reads right, ``shifted`` wrong."""
    servers = {}
    for name, shift in (("stable", False), ("shifted", True)):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Pipeline)
        server.shift, server.requests = shift, []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    yield {name: f"http://127.0.0.1:{s.server_address[1]}" for name, s in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def test_a_labelled_set_replays_as_pages_and_measures_cer(pipelines: dict[str, str],
                                                        tmp_path: Path) -> None:
    folder = labelled_set(tmp_path / "set", {"a.png": ["a"], "b.png": ["b"]})
    (folder / "c.png").write_bytes(PNG + b"fail")
    (folder / "texts.json").write_text(json.dumps({"a.png": ["a"], "b.png": ["x"], "c.png": ["fail"]}))
    same = ocr_check(pipelines["stable"], pipelines["stable"], "ocr", labelled=folder)
    assert same.rows == 3 and same.score is not None and same.score.value == 0.0
    assert same.truth_stable is not None and same.truth_stable.value == pytest.approx(1 / 6)
    shifted = ocr_check(pipelines["stable"], pipelines["shifted"], "ocr", labelled=folder)
    # a -> b, b -> c: 2 edits of 2 characters; "fail" failed (500): left out, not read as
    # nothing (a failed replay is missing evidence, not disagreement)
    assert (shifted.rows, shifted.failed, shifted.failures) == (2, 1, (("candidate 500", 1),))
    assert shifted.score is not None and shifted.score.value == 1.0
    # against the truth of the images both read (a, x): b and c are 1 + 1 edits of 2
    assert shifted.truth_candidate is not None and shifted.truth_candidate.value == 1.0
    assert shifted.truth_stable is not None and shifted.truth_stable.value == pytest.approx(1 / 2)
    # row by row, for the sequential tests: each image's CER against stable's reading, and
    # how much worse than stable's it is against the truth (a: 1 - 0; b: 1 - 1)
    assert [value for _, value in shifted.row_scores] == [1.0, 1.0]
    assert [value for _, value in shifted.row_truth] == [1.0, 0.0]
    assert len({digest for digest, _ in shifted.row_scores}) == 2
    assert [d for d, _ in shifted.row_scores] == [d for d, _ in same.row_scores[:2]]


def test_the_reservoir_of_image_rows_is_replayed(pipelines: dict[str, str]) -> None:
    check = ocr_check(pipelines["stable"], pipelines["shifted"], "ocr", admin_token=TOKEN)
    assert check.rows == 2 and check.score is not None and check.score.value == 1.0
    assert check.truth_stable is None  # no labels: agreement only
    nothing = ocr_check(pipelines["stable"], pipelines["shifted"], "ocr", admin_token="wrong")
    assert nothing.rows == 0 and nothing.score is None


def test_verification_agreement_of_two_pipelines(pipelines: dict[str, str], tmp_path: Path) -> None:
    sample = load_images(labelled_set(tmp_path / "set"))
    with ServingClient(pipelines["stable"]) as left, ServingClient(pipelines["shifted"]) as right:
        report = pages_agreement(left, right, "ocr", [sample], min_agreement=0.85, min_rows=2,
                                 stable_version="4.0.0", candidate_version="5.0.0")
        alike = pages_agreement(left, left, "ocr", [sample], min_agreement=0.85, min_rows=2)
        few = pages_agreement(left, left, "ocr", [sample], min_agreement=0.85, min_rows=100)
    assert report.task is Task.OCR and report.rows == 2
    assert report.score is not None and report.score.metric == "cer" and report.score.value == 1.0
    assert not report.passed and report.verdict == "below the threshold cer<=0.15"
    assert alike.passed and alike.verdict == "passed (cer<=0.15)"
    assert few.inconclusive and not few.passed
    assert report.to_dict()["score"]["metric"] == "cer"


def test_a_models_replay_leaves_image_rows_to_the_pipelines(pipelines: dict[str, str]) -> None:
    """The tensor replay of a model reads an image reservoir, but does not compare images:
    it falls back to the sample (none here: nothing compared)."""
    from workbench.deploy.rollout.replay import fetch_reservoir, output_check

    rows = fetch_reservoir(pipelines["stable"], TOKEN)
    assert rows["image"].tolist() == [PNG + b"seen", PNG + b"live"]
    check = output_check(pipelines["stable"], pipelines["shifted"], "ocr", admin_token=TOKEN)
    assert check.rows == 0 and check.agreement is None
