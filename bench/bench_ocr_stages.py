"""Where an OCR pipeline request's time goes: the chain's phases, in-process vs served.

    uv run --extra cpu --extra dev python bench/bench_ocr_stages.py [--pages 8] [--rounds 2]

The stages and pipelines of ``bench/bench_ocr_pipeline.py`` are published into a
temporary repository. For each pipeline version the same pages run through the same
OcrChain three ways, alternated page by page so all see the same machine load:

- ``in-process``: predictors in this process (the bench's in-process column);
- ``workers``: the hub's stage versions in worker processes, as ``workbench serve`` loads
  them (process isolation, SCHED_BATCH workers, one math thread), called from this process
  (no HTTP): the difference to in-process is worker IPC and scheduling;
- ``served``: one ``workbench serve`` over HTTP (tritonclient binary ``BYTES``): the
  difference to ``workers`` is HTTP, the request path and the serving layer's scheduling.

Per phase it prints milliseconds per page (mean over ``rounds`` passes after a warm-up
pass): decode (PNG), det (pre-processing, model, post-processing and crops), cls, rec
(each stage's model calls, pre- and post-processing included), and the total.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "3")

from tests.serving import _pipeline
from tests.serving.conftest import ServeProcess

VERSIONS = ("5.0.0", "4.0.0")


class Timed:
    """A chain's ``predict`` functions wrapped to add each stage's model seconds to ``spent``."""

    def __init__(self, predicts: dict[str, Callable[[Any], Any]]) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.predicts = {role: self._wrap(role, fn) for role, fn in predicts.items()}

    def _wrap(self, role: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def predict(batch: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(batch)
            finally:
                self.spent[role] += time.perf_counter() - started

        return predict


def read(chain: Any, timed: Timed, page: bytes) -> None:
    from workbench.codecs.image import DecodeImage

    started = time.perf_counter()
    image = DecodeImage()({"image": page})["image"]
    timed.spent["decode"] += time.perf_counter() - started
    started = time.perf_counter()
    chain.run([image], timed.predicts["det"], timed.predicts["rec"], timed.predicts.get("cls"))
    timed.spent["chain"] += time.perf_counter() - started


def run(pages_count: int, rounds: int) -> None:
    import tritonclient.http as triton

    from workbench.codecs import Codec
    from workbench.codecs.ocr import OcrChain
    from workbench.runtime.hub import VersionHub
    from workbench.runtime.worker import SCHEDULING_ENV

    pages, _ = _pipeline.pages(pages_count)
    with tempfile.TemporaryDirectory(prefix="bench-ocr-stages-") as tmp:
        root = Path(tmp) / "repo"
        repo = _pipeline.publish_pipelines(root)
        server = ServeProcess(["--repo", str(root), "--model", "ocr", "--version", VERSIONS[0],
                               "--load", VERSIONS[1], "--workers", "1", "--max-batch-size", "4",
                               "--log-level", "warning", "--no-access-log"], Path(tmp) / "serve.log")
        server.start(wait_ready=False)
        os.environ[SCHEDULING_ENV] = "batch"  # as workbench serve runs its workers
        hub = VersionHub(repo, "ocr", device="cpu", isolation="process", workers=1, cpu_threads=1)
        try:
            server.wait_ready(timeout=900)
            client = triton.InferenceServerClient(server.url.removeprefix("http://"))
            for version in VERSIONS:
                stages = {s.role: s.ref for s in repo.pipeline("ocr", version).stages}
                codecs = {role: Codec(repo.manifest(*ref.split(":")).codec or {})
                          for role, ref in stages.items()}
                chain = OcrChain(codecs["det"], codecs["rec"], codecs.get("cls"))
                local = Timed({role: _pipeline.stage_predict(repo, ref) for role, ref in stages.items()})
                loaded: Any = hub.load(version, activate=True)
                workers = Timed({role: loaded.stage_predict(role) for role in stages})
                served_seconds = 0.0

                def served(page: bytes, version: str = version) -> None:
                    tensor = triton.InferInput("image", [1], "BYTES")
                    tensor.set_data_from_numpy(np.array([page], dtype=np.object_), binary_data=True)
                    client.infer("ocr", [tensor], model_version=version)

                for counted in (False, *([True] * rounds)):
                    if counted:
                        local.spent.clear()
                        workers.spent.clear()
                    for page in pages:
                        read(chain, local, page)
                        read(chain, workers, page)
                        started = time.perf_counter()
                        served(page)
                        if counted:
                            served_seconds += time.perf_counter() - started
                n = rounds * len(pages)
                print(f"\nocr:{version}, ms per page ({len(pages)} pages x {rounds} rounds, alternated)\n")
                print("| phase | in-process | workers (no HTTP) | served (HTTP) |")
                print("| --- | ---: | ---: | ---: |")
                for phase in ("decode", "det", "cls", "rec"):
                    if phase in local.spent:
                        print(f"| {phase} model calls | {1000 * local.spent[phase] / n:.1f} | "
                              f"{1000 * workers.spent[phase] / n:.1f} | |")
                for timed in (local, workers):
                    timed.spent["codecs"] = timed.spent["chain"] - sum(
                        timed.spent[r] for r in ("det", "cls", "rec"))
                print(f"| codecs (pre/post, crops) | {1000 * local.spent['codecs'] / n:.1f} | "
                      f"{1000 * workers.spent['codecs'] / n:.1f} | |")
                total = {name: 1000 * (t.spent["decode"] + t.spent["chain"]) / n
                         for name, t in (("local", local), ("workers", workers))}
                print(f"| total | {total['local']:.1f} | {total['workers']:.1f} | "
                      f"{1000 * served_seconds / n:.1f} |")
            client.close()
        finally:
            hub.close()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"load average at start: {os.getloadavg()}")
    run(args.pages, args.rounds)
    print(f"\nload average at end: {os.getloadavg()}; run took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
