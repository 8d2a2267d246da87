"""OCR through codecs: served vs in-process vs RapidOCR, side by side, in one run.

    uv run python bench/bench_ocr.py [--pages 12] [--lines 48] [--rounds 2] [--pipeline-pages 8]

The PP-OCRv5 mobile detector and recogniser are published from their PaddleX exports
(codecs from inference.yml; the detector with oneDNN off) into a temporary repository
and served by ``workbench serve`` (process isolation, one worker, one math thread,
batching on). Rendered pages (DejaVu fonts) and text lines, PNG-encoded, are sent one
request at a time as binary ``BYTES`` tensors (``tritonclient.http``'s wire format).
Rows, per stage and for the chain, all on one machine, one after another:

- ``served``: the instance answering the PNG (det: boxes; rec: text); the chain is
  det served -> crops cut by the client -> one rec request with every crop
- ``in-process``: the same codecs and weights through paddle.inference in this
  process (decode, preprocess, predict, postprocess), one math thread
- ``rapidocr v4``: RapidOCR's own pre/post-processing with its PP-OCRv4 weights, in
  this process, from the same PNGs (its own image loading), and our codecs on the same
  v4 weights (``codecs v4``) so the codec cost is compared like for like

Each row reports images/s and p50 / p99 latency in ms over ``--rounds`` passes (a
quarter of the items run first to warm up and are not counted); ratios are printed
against in-process (target: served >= 0.9x). The served rows include HTTP, PNG
transfer and worker IPC. For det and rec, in-process and served are called
alternately, item by item, so both see the same load on a shared machine; the other
rows run one after another.

Then, unless ``--pipeline-pages 0``, the OCR pipeline versions served as one model
against the same chain in-process, with their CER (``bench/bench_ocr_pipeline.py``).
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

from tests.codecs import _ocr
from tests.serving.conftest import ServeProcess


def timed(label: str, items: list[Any], call: Any, rounds: int) -> dict[str, Any]:
    for item in items[: max(1, len(items) // 4)]:  # warm-up
        call(item)
    latencies = []
    started = time.perf_counter()
    for _ in range(rounds):
        for item in items:
            t0 = time.perf_counter()
            call(item)
            latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    ms = np.array(latencies) * 1000.0
    return {"label": label, "ips": len(latencies) / total, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99))}


def timed_pair(labels: tuple[str, str], items: list[Any], calls: tuple[Any, Any],
               rounds: int) -> list[dict[str, Any]]:
    """Two ways of doing the same thing, called alternately item by item, so both see the
    same load on a shared machine (their ratio is then the product's, not the hour's)."""
    for item in items[: max(1, len(items) // 4)]:  # warm-up
        for call in calls:
            call(item)
    latencies: list[list[float]] = [[], []]
    for _ in range(rounds):
        for item in items:
            for k, call in enumerate(calls):
                t0 = time.perf_counter()
                call(item)
                latencies[k].append(time.perf_counter() - t0)
    rows = []
    for label, seconds in zip(labels, latencies, strict=True):
        ms = np.array(seconds) * 1000.0
        rows.append({"label": label, "ips": len(seconds) / sum(seconds),
                     "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))})
    return rows


def bytes_request(client: Any, model: str, images: list[bytes]) -> dict[str, np.ndarray]:
    import tritonclient.http as triton

    tensor = triton.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    result = client.infer(model, [tensor])
    return {out["name"]: result.as_numpy(out["name"]) for out in result.get_response()["outputs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--lines", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pipeline-pages", type=int, default=8,
                        help="pages for the served-pipeline rows (bench_ocr_pipeline.py); 0: skip them")
    args = parser.parse_args()
    began = time.perf_counter()
    _ocr.require_exports()

    import cv2
    import tritonclient.http as triton

    from workbench import ModelRepository
    from workbench.codecs import Codec
    from workbench.codecs.crop import crop_text, reading_order
    from workbench.codecs.ocr import OcrChain
    from workbench.model.runtime_settings import RuntimeSettings
    from workbench.runtime.paddle import PaddleProbe

    fonts = _ocr.FONT_FILES
    pages = []
    for i in range(args.pages):
        lines = [_ocr.LINES[(i + k) % len(_ocr.LINES)] for k in range(3 + i % 3)]
        pages.append(_ocr.png(_ocr.render_page(lines, fonts[i % len(fonts)])[0]))
    lines_png = [_ocr.png(_ocr.render_line(_ocr.LINES[i % len(_ocr.LINES)], fonts[i % len(fonts)]))
                 for i in range(args.lines)]

    rows: dict[str, list[dict[str, Any]]] = {"det": [], "rec": [], "chain": []}
    det5, rec5 = Codec.from_export(_ocr.V5_DET), Codec.from_export(_ocr.V5_REC)
    det5_run = _ocr.run_fn(_ocr.V5_DET, mkldnn=False)
    rec5_run = _ocr.run_fn(_ocr.V5_REC)
    chain5 = OcrChain(det5, rec5)
    rows["chain"].append(timed("in-process v5", pages, lambda p: chain5.run([p], det5_run, rec5_run),
                               args.rounds))

    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp:
        repo = ModelRepository(Path(tmp) / "repo")
        repo.publish("rec", "5.0.0", _ocr.V5_REC, probe=PaddleProbe())
        repo.publish("det", "5.0.0", _ocr.V5_DET, probe=PaddleProbe(),
                     runtime=RuntimeSettings.parse("onednn=off"))
        servers = []
        try:
            for model in ("det", "rec"):
                server = ServeProcess(["--repo", str(Path(tmp) / "repo"), "--model", model,
                                       "--workers", "1", "--log-level", "warning",
                                       "--max-batch-size", "2" if model == "det" else "8"],
                                      Path(tmp) / f"{model}.log")
                servers.append(server.start(wait_ready=False))
            for server in servers:
                try:
                    server.wait_ready(timeout=900)
                except AssertionError:
                    print(server.log()[-4000:])
                    raise
            det_client = triton.InferenceServerClient(servers[0].url.removeprefix("http://"))
            rec_client = triton.InferenceServerClient(servers[1].url.removeprefix("http://"))

            def served_chain(page: bytes) -> list[str]:
                found = bytes_request(det_client, "det", [page])
                bgr = cv2.imdecode(np.frombuffer(page, np.uint8), cv2.IMREAD_COLOR)
                boxes = found["boxes"]
                crops = [_ocr.png(crop_text(bgr, boxes[i])) for i in reading_order(boxes)]
                if not crops:
                    return []
                read = bytes_request(rec_client, "rec", crops)
                return [t.decode() for t in read["text"]]

            rows["det"][:0] = timed_pair(
                ("in-process v5", "served v5"), pages,
                (lambda p: det5.run([p], det5_run), lambda p: bytes_request(det_client, "det", [p])),
                args.rounds)
            rows["rec"][:0] = timed_pair(
                ("in-process v5", "served v5"), lines_png,
                (lambda p: rec5.run([p], rec5_run), lambda p: bytes_request(rec_client, "rec", [p])),
                args.rounds)
            rows["chain"].append(timed("served v5 (det, client crop, rec)", pages, served_chain,
                                       args.rounds))
            det_client.close()
            rec_client.close()
        finally:
            for server in servers:
                server.stop()

    det4, rec4 = Codec(_ocr.v4_spec("det")), Codec(_ocr.v4_spec("rec"))
    det4_run, rec4_run = _ocr.run_fn(_ocr.V4_DET), _ocr.run_fn(_ocr.V4_REC)
    chain4 = OcrChain(det4, rec4)
    rows["det"].append(timed("codecs v4", pages, lambda p: det4.run([p], det4_run), args.rounds))
    rows["rec"].append(timed("codecs v4", lines_png, lambda p: rec4.run([p], rec4_run), args.rounds))
    rows["chain"].append(timed("codecs v4", pages, lambda p: chain4.run([p], det4_run, rec4_run),
                               args.rounds))
    rapid = _ocr.rapidocr()()
    load = rapid.load_img
    rows["det"].append(timed("rapidocr v4", pages, lambda p: rapid.text_det(load(p)), args.rounds))
    rows["rec"].append(timed("rapidocr v4", lines_png, lambda p: rapid.text_rec([load(p)]), args.rounds))
    rows["chain"].append(timed("rapidocr v4", pages, lambda p: rapid(p, use_cls=False), args.rounds))

    print(f"\nOCR codecs, {args.pages} pages / {args.lines} lines x {args.rounds} rounds, one request "
          "at a time\n")
    for stage, results in rows.items():
        base = results[0]["ips"]
        v4 = next(r["ips"] for r in results if r["label"] == "codecs v4")
        print(f"| {stage} | images/s | p50 ms | p99 ms | vs in-process v5 | vs codecs v4 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for r in results:
            print(f"| {r['label']} | {r['ips']:.2f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                  f"{r['ips'] / base:.2f}x | {r['ips'] / v4:.2f}x |")
        print()
    if args.pipeline_pages:  # pipeline versions served as one model (bench_ocr_pipeline.py)
        import bench_ocr_pipeline

        bench_ocr_pipeline.report(bench_ocr_pipeline.run(args.pipeline_pages, args.rounds),
                                  args.pipeline_pages, args.rounds)
    print(f"run took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
