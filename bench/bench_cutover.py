"""Blue/green cutovers under constant load through the router, measured in one run.

    uv run python bench/bench_cutover.py [--repo DIR] [--cutovers 20] [--threads 4]

Blue serves digits 1.0.0, the candidate 1.1.0 (real ``workbench serve`` processes,
real nginx). Client threads send small inference requests through the router the
whole time. Each cycle starts and verifies a candidate (``update``), lets the load
run steady for ``--steady`` seconds, then cuts over: ``promote`` (all traffic to the
candidate) and, after another steady stretch, ``rollback`` (all traffic back, the
candidate stopped). Reported:

- failed requests (anything but a 200, including connection errors) — target 0;
- time from the command to 100% of responses from the target colour: the start of
  the last request, issued after the command, that was still answered by the old
  colour (0 when none was) — target <= 1 s; and how long the command itself took;
- p50/p99 latency of requests started during the second after each cutover against
  requests started in the steady stretches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from workbench.deploy.client import encode_inputs
from workbench.deploy.manager import DeploymentManager

console = Console()


@dataclass(frozen=True)
class Sample:
    start: float
    end: float
    ok: bool
    color: str
    error: str = ""


class Load:
    """``threads`` clients sending requests back to back until stopped (bounded by ``limit``)."""

    def __init__(self, url: str, model: str, threads: int, limit: float) -> None:
        self.url = url
        self.model = model
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit
        x = np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32)
        self._body = json.dumps(encode_inputs({"x": x})).encode()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        path = f"/v2/models/{self.model}/infer"
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=self.url, timeout=30.0, trust_env=False) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                start = time.monotonic()
                try:
                    response = client.post(path, content=self._body, headers=headers)
                    ok = response.status_code == 200
                    sample = Sample(start, time.monotonic(), ok,
                                    response.headers.get("x-deploy-color", "?"),
                                    "" if ok else f"HTTP {response.status_code}")
                except httpx.HTTPError as exc:
                    sample = Sample(start, time.monotonic(), False, "?", repr(exc))
                with self._lock:
                    self.samples.append(sample)

    def between(self, start: float, end: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if start <= s.start < end]


@dataclass(frozen=True)
class Cutover:
    action: str
    target: str
    command_s: float
    converge_s: float
    failed: int
    requests: int


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def demo_repo(repo: Path | None) -> Path:
    if repo is not None:
        return repo
    from workbench.model.demo import build_demo_repository

    cache = Path(__file__).resolve().parent.parent / ".cache"
    found = sorted(cache.glob("demo-repo-*/digits"))
    if found:
        return found[-1].parent
    target = Path(tempfile.mkdtemp(prefix="wb-bench-repo-"))
    console.log(f"building the demo repository in {target}")
    build_demo_repository(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=None, help="repository with digits")
    parser.add_argument("--cutovers", type=int, default=20, help="promotes + rollbacks")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--steady", type=float, default=2.0, help="seconds of steady load")
    parser.add_argument("--window", type=float, default=1.0, help="seconds after a cutover")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    repo = demo_repo(args.repo)
    home = Path(tempfile.mkdtemp(prefix="wb-bench-", dir="/tmp"))
    manager = DeploymentManager(home, repo=repo)
    cutovers: list[Cutover] = []
    steady: list[Sample] = []
    during: list[Sample] = []
    all_samples: list[Sample] = []
    started = time.monotonic()
    try:
        with console.status("creating the deployment (blue: digits 1.0.0)…"):
            web = manager.create("bench", "digits", "1.0.0", timeout=300)
        cycles = max(1, args.cutovers // 2)
        limit = 120.0 + cycles * 90.0
        with Load(web.url, "digits", args.threads, limit) as load:
            for cycle in range(cycles):
                with console.status(f"cycle {cycle + 1}/{cycles}: starting the candidate…"):
                    state = web.update("1.1.0", timeout=300)
                candidate = state.rollout.candidate
                stable = state.rollout.stable
                for action, target in (("promote", candidate), ("rollback", stable)):
                    t_steady = time.monotonic()
                    time.sleep(args.steady)
                    steady += load.between(t_steady, time.monotonic())
                    t0 = time.monotonic()
                    getattr(web, action)()
                    command = time.monotonic() - t0
                    time.sleep(max(args.window, command) + 0.5)
                    after = load.between(t0, time.monotonic())
                    stale = [s.start for s in after if s.ok and s.color != target]
                    converge = max(stale) - t0 if stale else 0.0
                    window = [s for s in after if s.start < t0 + args.window]
                    during += window
                    cutovers.append(Cutover(action, target, command, converge,
                                            sum(not s.ok for s in after), len(after)))
                    console.log(
                        f"{action:8} → {target:5}: command {command * 1000:6.0f} ms, "
                        f"100% {target} after {converge * 1000:6.0f} ms, "
                        f"{sum(not s.ok for s in after)} failed of {len(after)}"
                    )
            all_samples = list(load.samples)
    finally:
        for name in manager.names():
            manager.delete(name)
        shutil.rmtree(home, ignore_errors=True)

    failed = [s for s in all_samples if not s.ok]
    converge = [c.converge_s for c in cutovers]
    commands = [c.command_s for c in cutovers]
    lat = lambda samples: [(s.end - s.start) * 1000 for s in samples if s.ok]  # noqa: E731
    figures = {
        "cutovers": len(cutovers),
        "requests": len(all_samples),
        "failed_requests": len(failed),
        "converge_ms_median": statistics.median(converge) * 1000,
        "converge_ms_max": max(converge) * 1000,
        "command_ms_median": statistics.median(commands) * 1000,
        "command_ms_max": max(commands) * 1000,
        "p50_ms_steady": pct(lat(steady), 50),
        "p99_ms_steady": pct(lat(steady), 99),
        "p50_ms_cutover": pct(lat(during), 50),
        "p99_ms_cutover": pct(lat(during), 99),
        "seconds": time.monotonic() - started,
    }
    table = Table(title=f"{len(cutovers)} blue/green cutovers under load ({args.threads} clients)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("requests (failed)", f"{len(all_samples)} ({len(failed)})", "0 failed")
    table.add_row("command → 100% target colour, median / max",
                  f"{figures['converge_ms_median']:.0f} / {figures['converge_ms_max']:.0f} ms",
                  "≤ 1000 ms")
    table.add_row("command duration, median / max",
                  f"{figures['command_ms_median']:.0f} / {figures['command_ms_max']:.0f} ms", "")
    table.add_row("p50 / p99 steady",
                  f"{figures['p50_ms_steady']:.1f} / {figures['p99_ms_steady']:.1f} ms", "")
    table.add_row(f"p50 / p99 in the {args.window:g} s after a cutover",
                  f"{figures['p50_ms_cutover']:.1f} / {figures['p99_ms_cutover']:.1f} ms", "")
    table.add_row("p99 cutover / steady",
                  f"{figures['p99_ms_cutover'] / figures['p99_ms_steady']:.2f}×", "")
    console.print(table)
    if failed:
        console.print("first failures:", *{s.error for s in failed[:5]}, sep="\n  ")
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
