"""Hot swap, memory and side-by-side cost of the version hub, measured in one run.

    uv run python bench/bench_hub.py [--repo DIR] [--seconds 12] [--threads 4] [--cycles 50]
        [--isolation thread|process] [--workers 1]

1. Swap under load: client threads call ``hub.predict`` on the digits model; first
   a steady phase, then a phase where a freshly loaded (warmed) version is swapped
   in every 2 s and the previous one unloaded. Reports requests, failures and
   p50/p99 in both phases.
1b. First request after a swap: one client calls ``hub.predict`` (one row) back to
   back; a freshly loaded, warmed version waits ``--idle`` seconds beside the active
   one (as a version waits for its switch) and ``hub.use`` switches to it; its first
   answer is timed, then 30 more; first / steady p50 (median of ``--swaps`` swaps, 9 by default), on digits
   and on ResNet-18, and the same for a version opened without warm-up.
2. Memory: RSS over ``--cycles`` load/unload cycles of ResNet-18.
3. Side-by-side: ``compare`` over three versions against the sum of three single runs
   (with ``--isolation process`` each version in its own workers, run at the same time).

With ``--isolation process`` every version runs in ``--workers`` worker processes;
the swap phase loads the three digits versions first (a worker takes seconds to
start) and swaps the active one every 2 s;
the memory section then loads and unloads a digits version ``--cycles`` times and
reports the front's RSS (flat: this process never imports Paddle) and whether each
unload ended the version's worker processes and returned their memory.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from workbench import ModelRepository, VersionHub, compare
from workbench.model.demo import digits_dataset
from workbench.runtime.device import Device
from workbench.runtime.isolated import ProcessLoadedVersion
from workbench.runtime.loaded import LoadedVersion
from workbench.runtime.memory import process_rss

if TYPE_CHECKING:
    from collections.abc import Callable

console = Console()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def swap_under_load(repo: ModelRepository, seconds: float, threads: int, isolation: str = "thread",
                    workers: int = 1) -> dict[str, float]:
    rows = digits_dataset()[2][:8]
    versions = ["1.0.0", "1.1.0", "1.2.0"]
    hub = VersionHub(repo, "digits", device="cpu", isolation=isolation,
                     workers=threads if isolation == "thread" else workers)
    hub.load(versions[0])
    if isolation == "process":
        # a worker takes seconds to start: every version is loaded (in its own workers)
        # before the clients start, and a swap is the hub's one assignment
        for version in versions[1:]:
            hub.load(version, activate=False)
    stop = threading.Event()
    records: list[tuple[float, float, str]] = []  # (start, latency, version)
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                result = hub.predict({"x": rows})
            except Exception as exc:
                failures.append(repr(exc))
                continue
            with lock:
                records.append((started, time.perf_counter() - started, str(result.version)))

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    steady_start = time.perf_counter()
    for worker in workers:
        worker.start()
    time.sleep(seconds / 3)
    swap_start = time.perf_counter()
    swaps: list[float] = []
    index = 0
    while time.perf_counter() - swap_start < seconds * 2 / 3:
        time.sleep(max(0.0, 2.0 - (time.perf_counter() - swap_start) % 2.0))
        previous, index = versions[index % 3], index + 1
        target = versions[index % 3]
        if isolation == "process":
            swaps.append(time.perf_counter())
            hub.use(target)
            continue
        hub.load(target, activate=False)  # loaded and warmed off the request path
        swaps.append(time.perf_counter())
        hub.use(target)
        hub.unload(previous)
    stop.set()
    for worker in workers:
        worker.join(10)
    end = time.perf_counter()
    hub.close()

    steady = [lat for start, lat, _ in records if steady_start <= start < swap_start]
    during = [lat for start, lat, _ in records if start >= swap_start]
    return {
        "requests": len(records),
        "failures": len(failures),
        "swaps": len(swaps),
        "seconds": end - steady_start,
        "steady_p50_ms": pct(steady, 50),
        "steady_p99_ms": pct(steady, 99),
        "swap_p50_ms": pct(during, 50),
        "swap_p99_ms": pct(during, 99),
    }


def first_request(repo: ModelRepository, model: str, version: str, rows: dict[str, np.ndarray],
                  *, warmup: bool, swaps: int = 5, isolation: str = "thread",
                  idle: float = 1.0) -> dict[str, float]:
    """Median latency of the first request after a swap and the steady p50 that follows it.

    Warmed: ``version`` is published twice into a scratch repository; while one copy is
    active, the other is loaded through the hub (warmed), waits ``idle`` seconds (a
    loaded version waits for its switch while other work runs), and ``hub.use``
    switches to it while one client keeps calling ``hub.predict``; the first answer
    the new copy gives is the first request after the swap. Not warmed: a copy is
    opened without warm-up, waits as long, and takes the client's requests.
    """
    firsts, steady = [], []
    with tempfile.TemporaryDirectory(prefix="bench-first-") as tmp:
        scratch = ModelRepository(tmp)
        sample, manifest = repo.sample(model, version), repo.manifest(model, version)
        copies = [  # the signature given: publishing runs nothing (no Paddle in this process)
            str(scratch.publish(model, v, repo.path(model, version), sample=sample,
                                inputs=manifest.inputs, outputs=manifest.outputs).version)
            for v in ("1.0.0", "1.0.1")
        ]
        hub = VersionHub(scratch, model, device="cpu", isolation=isolation)
        hub.load(copies[0])
        kind = ProcessLoadedVersion if isolation == "process" else LoadedVersion
        for _ in range(swaps):
            active = str(hub.active.version) if hub.active else copies[0]
            target = next(v for v in copies if v != active)
            if warmup:
                hub.load(target, activate=False)
                time.sleep(idle)
                records = _client_across_swap(hub, rows, lambda target=target: hub.use(target), target)
                hub.unload(active)
            else:
                loaded = kind(
                    model=model, version=scratch.resolve(model, target),
                    manifest=scratch.manifest(model, target), path=scratch.path(model, target),
                    device=Device("cpu"),
                ).open(warmup=False)
                time.sleep(idle)
                records = [_timed(loaded.predict, rows) for _ in range(31)]
                loaded.close()
            firsts.append(records[0])
            steady.extend(records[1:31])
        hub.close()
    first_ms, steady_ms = statistics.median(firsts) * 1000, pct(steady, 50)
    return {"first_ms": first_ms, "steady_p50_ms": steady_ms, "ratio": first_ms / steady_ms}


def _timed(fn: Callable[[dict[str, np.ndarray]], object], rows: dict[str, np.ndarray]) -> float:
    started = time.perf_counter()
    fn(rows)
    return time.perf_counter() - started


def _client_across_swap(hub: VersionHub, rows: dict[str, np.ndarray], swap: Callable[[], object],
                        target: str) -> list[float]:
    """One client calling ``hub.predict`` back to back while ``swap()`` runs; the latencies
    of the first 31 requests ``target`` answered."""
    latencies: list[float] = []

    def client() -> None:
        deadline = time.monotonic() + 60
        while len(latencies) < 31 and time.monotonic() < deadline:
            started = time.perf_counter()
            result = hub.predict(rows)
            if str(result.version) == target:
                latencies.append(time.perf_counter() - started)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.05)  # the client is in its stride on the active version
    swap()
    thread.join()
    return latencies


def _slope(samples: list[int]) -> float:
    """Bytes per cycle of a straight line through the samples after the first fifth."""
    tail = np.asarray(samples[len(samples) // 5 :], dtype=float)
    return float(np.polyfit(np.arange(len(tail)), tail, 1)[0]) if len(tail) > 2 else float("nan")


def memory_cycles(repo: ModelRepository, cycles: int) -> dict[str, float]:
    hub = VersionHub(repo, "resnet", device="cpu")
    hub.load("1.0.0")  # stays active throughout, as in a serving process
    digits = VersionHub(repo, "digits", device="cpu")
    digits.load("1.0.0")
    samples: list[int] = []
    for _ in range(cycles):
        digits.load("1.1.0", activate=False)
        digits.unload("1.1.0")
        hub_b = VersionHub(repo, "resnet", device="cpu")
        hub_b.load("1.0.0")
        hub_b.close()
        gc.collect()
        samples.append(process_rss())
    hub.close()
    digits.close()
    slope = _slope(samples)
    return {
        "cycles": cycles,
        "rss_after_1_mib": samples[0] / 2**20,
        "rss_after_10_mib": samples[min(9, cycles - 1)] / 2**20,
        "rss_after_all_mib": samples[-1] / 2**20,
        "growth_per_cycle_kib": slope / 1024,
        "resnet_weights_mib": sum(
            f.size for f in repo.manifest("resnet", "1.0.0").files if f.path.endswith("pdiparams")
        ) / 2**20,
    }


def worker_memory_cycles(repo: ModelRepository, cycles: int) -> dict[str, float]:
    """Process isolation: load/unload a digits version; the front stays flat, workers end."""
    hub = VersionHub(repo, "digits", device="cpu", isolation="process")
    hub.load("1.0.0")
    samples: list[int] = []
    worker_rss: list[int] = []
    survivors = 0
    for _ in range(cycles):
        loaded = hub.load("1.1.0", activate=False)
        pids = loaded.worker_pids
        worker_rss.append(loaded.memory.rss_bytes)
        hub.unload("1.1.0")
        survivors += sum(1 for pid in pids if psutil.pid_exists(pid))
        gc.collect()
        samples.append(process_rss())
    hub.close()
    slope = _slope(samples)
    return {
        "cycles": cycles,
        "front_rss_after_1_mib": samples[0] / 2**20,
        "front_rss_after_all_mib": samples[-1] / 2**20,
        "growth_per_cycle_kib": slope / 1024,
        "worker_rss_per_version_mib": float(np.median(worker_rss)) / 2**20,
        "workers_alive_after_unload": survivors,
        "paddle_imported_in_front": "paddle" in sys.modules,
    }


def side_by_side(repo: ModelRepository, isolation: str = "thread", workers: int = 1,
                 rounds: int = 3) -> dict[str, float]:
    """``compare`` of three digits versions against the sum of three single-version runs.

    In process isolation each version runs in its own worker processes and the versions
    run at the same time; the same measure in-process is printed beside it. ``overlap``
    is the time spent in batches over wall time (above 1: versions ran at once; below 1:
    they took turns). Medians of ``rounds`` rounds (one round takes about a second).
    """
    x, y = digits_dataset()[2:]
    versions = ("1.0.0", "1.1.0", "1.2.0")
    hub = VersionHub(repo, "digits", device="cpu", isolation=isolation, workers=workers)
    for version in versions:
        hub.load(version, activate=version == "1.0.0")
    compare(hub, x[:64], labels=y[:64])  # warm caches
    together, singles, overlaps = [], [], []
    for _ in range(rounds):
        result = compare(hub, x, labels=y)
        together.append(result.seconds)
        overlaps.append(result.overlap)
        singles.append(sum(compare(hub, x, versions=[v], labels=y).seconds for v in versions))
    hub.close()
    ratios = [t / s for t, s in zip(together, singles, strict=True)]
    summary = {"rows": len(x), "rounds": rounds, "side_by_side_s": statistics.median(together),
               "sum_of_singles_s": statistics.median(singles), "ratio": statistics.median(ratios),
               "overlap": statistics.median(overlaps)}
    if isolation == "process":
        in_process = side_by_side(repo, "thread", rounds=rounds)
        summary |= {"in_process_ratio": in_process["ratio"], "in_process_overlap": in_process["overlap"]}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, help="demo repository (built in a temp dir if omitted)")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--isolation", choices=("thread", "process"), default="thread")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per version")
    parser.add_argument("--swaps", type=int, default=9,
                        help="swaps timed for the first request after a swap (median)")
    parser.add_argument("--idle", type=float, default=1.0,
                        help="seconds a loaded version waits before it is swapped in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.repo or Path(tmp) / "repo"
        if not args.repo:
            with console.status("training demo models"):
                # in a child process: this one is the front, which in process
                # isolation must never import Paddle (its RSS is measured below)
                subprocess.run(
                    [sys.executable, "-c",
                     "import sys; from workbench.model.demo import build_demo_repository; "
                     "build_demo_repository(sys.argv[1])", str(root)],
                    check=True,
                )
        repo = ModelRepository(root)
        with console.status("swap under load"):
            swap = swap_under_load(repo, args.seconds, args.threads, args.isolation, args.workers)
        firsts = {}
        # No spinner here: its refresh thread takes the GIL a dozen times a second and
        # would land on some of the sub-millisecond requests timed; a line per step instead.
        for model, version in (("digits", "1.1.0"), ("resnet", "1.0.0")):
            rows = repo.sample(model, version)
            rows = {k: v[:1] for k, v in rows.items()}
            for warm in (True, False):
                label = f"{model} {'warmed' if warm else 'not warmed'}"
                console.print(f"first request after a swap: {label} ({args.swaps} swaps)")
                firsts[label] = first_request(
                    repo, model, version, rows, warmup=warm, isolation=args.isolation,
                    idle=args.idle, swaps=args.swaps)
        with console.status(f"memory over {args.cycles} load/unload cycles"):
            if args.isolation == "process":
                memory = worker_memory_cycles(repo, args.cycles)
            else:
                memory = memory_cycles(repo, args.cycles)
        with console.status("side-by-side cost"):
            sbs = side_by_side(repo, args.isolation, args.workers)
    memory_title = "memory (digits, worker processes)" if args.isolation == "process" else (
        "memory (resnet18 + digits)")
    for title, data in ((f"swap under load (digits, {args.isolation})", swap), (memory_title, memory),
                        (f"side-by-side vs single runs (digits test split, {args.isolation})", sbs)):
        table = Table("measure", "value", title=title)
        for key, value in data.items():
            table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
        console.print(table)
    table = Table(
        "model", "first request ms", "steady p50 ms", "first / steady", title="first request after a swap"
    )
    for label, data in firsts.items():
        table.add_row(
            label, f"{data['first_ms']:.3f}", f"{data['steady_p50_ms']:.3f}", f"{data['ratio']:.2f}x"
        )
    console.print(table)
    console.print(
        f"[{args.isolation}] p99 during swaps / steady = {swap['swap_p99_ms'] / swap['steady_p99_ms']:.2f}x, "
        f"failures {swap['failures']} of {swap['requests']}; "
        f"side-by-side / sum of singles = {sbs['ratio']:.2f}x (overlap {sbs['overlap']:.2f}); "
        f"RSS growth over {memory['cycles']} cycles = {memory['growth_per_cycle_kib']:.0f} KiB/cycle"
    )


if __name__ == "__main__":
    main()
