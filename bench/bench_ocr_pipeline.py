"""OCR pipeline versions served as one model vs the same chain in-process, with CER.

    uv run --extra cpu --extra dev python bench/bench_ocr_pipeline.py [--pages 8] [--rounds 2]

The real PP-OCRv5 det/rec and PP-OCRv4 det/rec exports and RapidOCR's v2 orientation
classifier are published (oneDNN off, as tests/serving/_pipeline.py does) with two
pipeline versions, ``ocr`` 5.0.0 (v5 det, v2 cls, v5 rec) and 4.0.0 (the v4 det/cls/rec
RapidOCR ships), into a temporary repository. One ``workbench serve --model ocr`` loads
both (process isolation, one worker per stage, one math thread). Rendered pages
(DejaVu fonts, 2-3 known lines each) are sent one request at a time as binary ``BYTES``
tensors (``tritonclient.http``), pinned to each version. Per pipeline version:

- ``in-process img/s``: the same OcrChain over the same stage versions, predictors in
  this process with their manifests' settings and one math thread;
- ``served img/s`` and the ratio to in-process (HTTP, PNG transfer and worker IPC included);
- ``CER``: character error rate of the served lines against the rendered ground truth
  (a page's lines joined by newlines; errors summed over all pages / characters);
- ``same as in-process``: pages whose served lines (texts and boxes) equal the chain's.

The first pass over the pages warms up and is not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "3")

from tests.serving import _pipeline
from tests.serving.conftest import ServeProcess

VERSIONS = ("5.0.0", "4.0.0")


def throughput(pages: list[bytes], call: Any, rounds: int) -> tuple[float, list[Any]]:
    """Images per second over ``rounds`` passes after a warm-up pass; the last pass's answers."""
    answers = [call(page) for page in pages]
    started = time.perf_counter()
    for _ in range(rounds):
        answers = [call(page) for page in pages]
    return rounds * len(pages) / (time.perf_counter() - started), answers


def corpus_cer(truths: list[list[str]], found: list[list[str]]) -> float:
    from workbench.runtime.scoring import levenshtein

    errors = sum(levenshtein("\n".join(t), "\n".join(s.strip() for s in f))
                 for t, f in zip(truths, found, strict=True))
    return errors / sum(len("\n".join(t)) for t in truths)


def run(pages_count: int, rounds: int) -> list[dict[str, Any]]:
    """One row per pipeline version (see the module docstring)."""
    import tritonclient.http as triton

    from workbench import ModelRepository

    pages, truths = _pipeline.pages(pages_count)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ocr-pipeline-") as tmp:
        root = Path(tmp) / "repo"
        _pipeline.publish_pipelines(root)
        server = ServeProcess(["--repo", str(root), "--model", "ocr", "--version", VERSIONS[0],
                               "--load", VERSIONS[1], "--workers", "1", "--max-batch-size", "4",
                               "--log-level", "warning", "--no-access-log"], Path(tmp) / "serve.log")
        server.start(wait_ready=False)
        try:
            server.wait_ready(timeout=900)
            client = triton.InferenceServerClient(server.url.removeprefix("http://"))
            repo = ModelRepository(root)
            for version in VERSIONS:
                chain = _pipeline.in_process(repo, f"ocr:{version}")
                local_ips, local = throughput(pages, lambda page, chain=chain: chain([page])[0], rounds)

                def served(page: bytes, version: str = version) -> tuple[list[str], np.ndarray]:
                    tensor = triton.InferInput("image", [1], "BYTES")
                    tensor.set_data_from_numpy(np.array([page], dtype=np.object_), binary_data=True)
                    result = client.infer("ocr", [tensor], model_version=version)
                    return [t.decode() for t in result.as_numpy("text")], result.as_numpy("boxes")

                served_ips, answers = throughput(pages, served, rounds)
                same = sum(
                    texts == [line.text for line in lines]
                    and np.array_equal(boxes.reshape(-1, 4, 2),
                                       np.array([line.box for line in lines], np.float32).reshape(-1, 4, 2))
                    for (texts, boxes), lines in zip(answers, local, strict=True)
                )
                rows.append({
                    "version": version, "local_ips": local_ips, "served_ips": served_ips,
                    "cer": corpus_cer(truths, [texts for texts, _ in answers]),
                    "local_cer": corpus_cer(truths, [[line.text for line in lines] for lines in local]),
                    "same": same, "pages": len(pages),
                })
            client.close()
        except AssertionError:
            print(server.log()[-4000:])
            raise
        finally:
            server.stop()
    return rows


def report(rows: list[dict[str, Any]], pages: int, rounds: int) -> None:
    print(f"\nOCR pipeline versions served as one model, {pages} pages x {rounds} rounds, one request "
          "at a time\n")
    print("| pipeline | in-process img/s | served img/s | served ÷ in-process | CER served | "
          "CER in-process | same lines as in-process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| ocr:{r['version']} | {r['local_ips']:.2f} | {r['served_ips']:.2f} | "
              f"{r['served_ips'] / r['local_ips']:.2f}x | {100 * r['cer']:.2f} % | "
              f"{100 * r['local_cer']:.2f} % | {r['same']}/{r['pages']} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    began = time.perf_counter()
    report(run(args.pages, args.rounds), args.pages, args.rounds)
    print(f"run took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
