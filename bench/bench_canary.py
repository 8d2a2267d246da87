"""How fast and how safely a failing canary is rolled back, measured in one run.

    uv run --extra cpu --extra notebook --extra dev python bench/bench_canary.py \
        [--repo DIR] [--runs 3] [--intervals 30,2] [--rate 200] [--threads 8] \
        [--scrape 0.25] [--good 10] [--scenarios NAME,...] [--json]

Blue serves digits 1.0.0 behind real nginx; real ``workbench serve`` processes. Client
threads send inference requests (the held-out digits in turn) through the router at
``--rate`` requests/s in all (paced, bounded in time and count) the whole time. Each run
rolls out a bad candidate as a canary (steps 10,50,100; the default rules, the error rate
also compared with stable's) at each analysis interval of ``--intervals``, the controller
looking every ``--scrape`` seconds:

- ``100% errors``: 1.1.0 served with ``--fault-error-rate 1`` (every inference answers 500);
  verification checks only readiness, so the fault shows under traffic;
- ``5% errors``: the same with ``--fault-error-rate 0.05``;
- ``+140 ms latency``: the same with ``--fault-latency-ms 140`` (every answer 140 ms
  late), judged with the p99 maximum at 100 ms (:data:`LATENCY_MAX_MS`); queued behind
  the instance's inference worker, its p99 reads several times the maximum;
- ``+50% latency``: a graded excess against stable, on a deployment of its own whose
  stable (1.0.0) answers :data:`BASE_LATENCY_MS` late and whose candidate (1.1.0) half as
  late again (``--fault-latency-ms`` on each), judged by ``relative_latency`` with its
  maximum at 1.2 x stable (:data:`RELATIVE_MAX`; the default 1.5 would put +50% at the
  limit): the mean log latency's sequential test against stable's;
- ``degraded 1.2.0``: 1.2.0 (trained on partly shuffled labels: 74% top-1 agreement with
  1.0.0) let through on readiness alone, so the agreement rule judges it on traffic (a
  replay of stable's reservoir as each step begins and when each interval ends);
- ``degraded``: the same 1.2.0 with full verification: the agreement check refuses it
  before any traffic moves (reported as such).

Reported per scenario and interval: seconds from the candidate's first request to its last
one (both seen by polling its own ``workbench_requests_total`` every 50 ms, each change
dated at the middle of its poll: the time the bad version took traffic; targets: <= 1 s
for 100% errors, <= 5 s for 5%), and to the rollback being done (the candidate drained and
stopped too), the requests that reached the bad version (its own counter; target <= 50 at
200 requests/s for 100% errors), and failed client requests (target 0; the router retries
a candidate's 500 on stable). The time to the last request is split at the look that
decided the rollback: detection (first request to that look) and the switch (that look to
the last request). The client threads run in a process of their own, the controller in
this one.

Then ``--good`` good canaries (1.1.0 and 1.0.0 in turn, no fault) run to their end at the
shortest interval: none may be rolled back (the false rollbacks of a real canary). One
that pauses (its rules inconclusive too long) is stopped and counted apart, as is a run
that fails outright, so neither hangs the bench nor reads as a rollback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from bench_cutover import demo_repo
from rich.console import Console
from rich.table import Table

from workbench.deploy import canary
from workbench.deploy.client import encode_inputs
from workbench.deploy.manager import DeploymentManager
from workbench.deploy.platforms.process.backend import ProcessBackend
from workbench.deploy.rollout.analysis import (
    AnalysisSpec,
    ErrorRateRule,
    LatencyRule,
    RelativeLatencyRule,
)
from workbench.deploy.rollout.phases import Phase
from workbench.deploy.traffic import parse_metrics
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from workbench.deploy.rollout.controller import Action, CanaryStatus

console = Console(width=140)
FAULTY = "1.1.0"
#: The p99 maximum of the latency scenario, whose candidate answers 140 ms late (digits
#: answers in a few ms).
LATENCY_MAX_MS = 100.0
FAULTS_ENV = "WB_BENCH_FAULTS"
#: version -> its instances' faults, for every instance of that version (the +50% scenario)
VERSION_FAULTS_ENV = "WB_BENCH_VERSION_FAULTS"
#: The +50% scenario: stable answers this late, the candidate 1.5 times as late.
BASE_LATENCY_MS = 60.0
#: ... judged by relative_latency with this maximum ratio to stable
RELATIVE_MAX = 1.2
GRADED = "+50% latency"


def faulty_backend(home: Path) -> ProcessBackend:
    """Instances of FAULTY get the faults in $WB_BENCH_FAULTS; every instance of a version
    named in $WB_BENCH_VERSION_FAULTS (JSON: version -> faults) gets that version's instead
    (both read when each instance starts)."""
    wrapper = home / "faulty_serve.py"
    wrapper.write_text(
        "import json, sys, os\n"
        "args = [sys.executable, '-m', 'workbench', *sys.argv[1:]]\n"
        "version = sys.argv[sys.argv.index('--version') + 1] if '--version' in sys.argv else ''\n"
        f"mine = json.loads(os.environ.get({VERSION_FAULTS_ENV!r}) or '{{}}').get(version)\n"
        f"faults = os.environ.get({FAULTS_ENV!r}, '').split()\n"
        "if mine:\n"
        "    args += [*mine.split(), '--fault-version', version]\n"
        "elif faults:\n"
        f"    args += [*faults, '--fault-version', {FAULTY!r}]\n"
        "os.execv(sys.executable, args)\n"
    )
    return ProcessBackend(home, command=[sys.executable, str(wrapper)])


@dataclass(frozen=True)
class Sample:
    start: float
    ok: bool


class PacedLoad:
    """``threads`` clients sending ``rate`` requests/s in all, until stopped (at most
    ``limit`` seconds and ``rate * limit`` requests), in a process of their own: the
    canary's controller runs in this one, as it runs in a process of its own (the
    ``deploy update`` command, or its detached controller) in use, not beside eight busy
    client threads sharing its interpreter lock. Sample times are ``time.monotonic()``,
    the same clock in both processes."""

    def __init__(self, url: str, model: str, rate: float, threads: int, limit: float) -> None:
        self.began = time.monotonic()
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_load_process, daemon=True, name="paced-load",
                                         args=(child, url, model, rate, threads, limit))

    def __enter__(self) -> PacedLoad:
        self._process.start()
        if not self._conn.poll(120) or self._conn.recv() != "started":
            raise SystemExit("the load process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._conn.send("stop")
            self._conn.recv()
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()

    @property
    def samples(self) -> list[Sample]:
        self._conn.send("samples")
        return [Sample(start, ok) for start, ok in self._conn.recv()]

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.start < end]


def _load_process(conn: Connection, url: str, model: str, rate: float, threads: int,
                  limit: float) -> None:
    """The client threads; answers ``samples`` (every (start, ok) so far) and ``stop``."""
    pause = threads / rate
    samples: list[tuple[float, bool]] = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + limit
    budget = int(rate * limit)
    from workbench.model.demo import digits_dataset

    # the held-out digits in turn, one per request: varied inputs, as real traffic is, so
    # stable's reservoir (what the agreement rule replays) holds many distinct rows
    _, _, x_test, _ = digits_dataset()
    bodies = [json.dumps(encode_inputs({"x": x_test[i : i + 1]})).encode() for i in range(len(x_test))]

    def run(index: int) -> None:
        path = f"/v2/models/{model}/infer"
        headers = {"content-type": "application/json"}
        due = time.monotonic() + index * pause / threads
        with httpx.Client(base_url=url, timeout=30.0, trust_env=False) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                stop.wait(max(0.0, due - time.monotonic()))
                due += pause
                with lock:
                    if len(samples) >= budget:
                        return
                start = time.monotonic()
                body = bodies[(index + len(samples) * 7) % len(bodies)]
                try:
                    ok = client.post(path, content=body, headers=headers).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    samples.append((start, ok))

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    conn.send("started")
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the bench is gone
            message = "stop"
        if message == "stop":
            stop.set()
            for worker in workers:
                worker.join(30)
            with contextlib.suppress(OSError):
                conn.send("stopped")
            return
        with lock:
            conn.send(list(samples))


class CounterWatch:
    """Polls an instance's request counter every 50 ms: when it first moved, and how far
    (a change is dated at the middle of the poll that saw it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.base = self.read()
        self.first: float | None = None  # when its counter first moved
        self.moved: float | None = None  # when its counter last moved
        self.last = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def read(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=2.0, trust_env=False).text
        return sum(v for _, v in parse_metrics(text).get("workbench_requests_total", []))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            sent = time.monotonic()
            try:
                value = self.read()
            except (httpx.HTTPError, ValueError):
                continue  # stopped with the rollback
            # the counter was read somewhere between the poll's send and its answer: a busy
            # instance answers late, and the answer's arrival would date its change late
            now = (sent + time.monotonic()) / 2
            if value > self.base and self.first is None:
                self.first = now
            if value > self.last:
                self.moved = now
            self.last = max(self.last, value)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return self.last - self.base


def one_run(web, version: str, faults: str, spec: AnalysisSpec, load: PacedLoad,  # type: ignore[no-untyped-def]
            checks: tuple[str, ...] | None = None) -> dict[str, object]:
    os.environ[FAULTS_ENV] = faults
    if checks is None:
        checks = ("ready",) if faults else ("ready", "deep_health", "agreement")
    try:
        web.update(version, timeout=300, checks=checks)
    except WorkbenchError as exc:
        return {"refused": str(exc)}
    if web.phase.value != "verified":
        return {"refused": web.state.rollout.message}
    watch = CounterWatch(web.state.instances[web.state.rollout.candidate].url)
    marks: dict[str, float] = {}

    def listen(status: CanaryStatus, action: Action) -> None:
        marks.setdefault(action.kind, time.monotonic())

    offset = time.monotonic() - time.time()  # the status's times are wall-clock
    status = canary.run(web, spec, on_tick=listen)
    done = time.monotonic()
    reached = watch.stop()
    if status.stage is not Phase.ROLLED_BACK:
        raise SystemExit(f"{version} was not rolled back: {status.stage.value} {status.message}")
    first = watch.first if watch.first is not None else marks["advance"]
    moved = watch.moved if watch.moved is not None else first
    clients = load.between(marks["advance"], done + 1.0)
    console.log(f"{faults or version}: {status.message[:150]}")
    time.sleep(1.0)
    decided = status.updated + offset  # the look that decided the rollback
    return {
        "seconds": moved - first,
        "detect": decided - first,
        "switch": moved - decided,
        "done": marks["rollback"] - first,
        "reached": reached,
        "clients": len(clients),
        "failed": sum(not s.ok for s in clients),
    }


def guarded_run(web, name: str, interval: float, version: str, faults: str,  # type: ignore[no-untyped-def]
                spec: AnalysisSpec, load: PacedLoad,
                results: dict[tuple[str, float], list[dict[str, object]]], errors: list[str]) -> None:
    """One failing-canary run of scenario ``name``, its figures added to ``results``; a run
    that fails outright (e.g. a reload not shown in time) is noted in ``errors`` and
    rolled back by hand."""
    try:
        outcome = one_run(web, version, faults, spec, load, checks=("ready",))
    except WorkbenchError as exc:
        console.log(f"{name}: the run failed: {exc}")
        errors.append(f"{name} @ {interval:g} s: {exc}")
        with contextlib.suppress(WorkbenchError):
            web.rollback("the bench run failed")
        return
    results.setdefault((name, interval), []).append(outcome)


def graded_runs(manager: DeploymentManager, rules: tuple[object, ...], intervals: list[float],
                args: argparse.Namespace, results: dict[tuple[str, float], list[dict[str, object]]],
                errors: list[str]) -> None:
    """The +50% scenario: a deployment whose stable answers BASE_LATENCY_MS late (made here,
    deleted after), its own client load, the candidate 1.5 times as late."""
    late = BASE_LATENCY_MS * 1.5
    os.environ[VERSION_FAULTS_ENV] = json.dumps({
        "1.0.0": f"--fault-latency-ms {BASE_LATENCY_MS:g}", FAULTY: f"--fault-latency-ms {late:g}"})
    graded = tuple(replace(r, max_ratio=RELATIVE_MAX) if isinstance(r, RelativeLatencyRule) else r
                   for r in rules)
    try:
        with console.status(f"creating the {GRADED} deployment (1.0.0 answering "
                            f"{BASE_LATENCY_MS:g} ms late)…"):
            slow = manager.create("slow", "digits", "1.0.0", timeout=300)
        limit = 120.0 + args.runs * len(intervals) * 90.0
        with PacedLoad(slow.url, "digits", args.rate, args.threads, limit) as load:
            time.sleep(2.0)
            for interval in intervals:
                spec = AnalysisSpec(steps=(10, 50, 100), interval=interval, rules=graded,  # type: ignore[arg-type]
                                    scrape=args.scrape)
                for run in range(args.runs):
                    with console.status(f"interval {interval:g} s, run {run + 1}/{args.runs}: "
                                        f"{GRADED}…"):
                        guarded_run(slow, GRADED, interval, FAULTY, "", spec, load, results, errors)
    finally:
        os.environ.pop(VERSION_FAULTS_ENV, None)
        with contextlib.suppress(WorkbenchError):
            manager.delete("slow")


def good_run(web, spec: AnalysisSpec, load: PacedLoad) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """A good candidate (no fault; verified as ``update`` does by default, which warms it
    up) through the whole canary: the version stable does not serve. A canary that pauses
    (rules inconclusive for ``max_inconclusive`` intervals, e.g. every replay failing at
    this load) is stopped, rolled back by hand and counted as paused, not rolled back; a
    run that fails outright (verification not done in time) is counted as failed."""
    os.environ[FAULTS_ENV] = ""
    state = web.state  # after a promotion the promoted colour plays stable (Rollout.roles)
    live = state.instances[state.rollout.roles["stable"]].version
    version = FAULTY if live == "1.0.0" else "1.0.0"
    began = time.monotonic()
    stop = threading.Event()

    def listen(status: CanaryStatus, action: Action) -> None:
        if action.kind == "pause":
            stop.set()

    try:
        web.update(version, timeout=300)
        status = canary.run(web, spec, stop=stop, on_tick=listen)
        message, back = status.message, status.stage is Phase.ROLLED_BACK
    except WorkbenchError as exc:
        message, back = f"the run failed: {exc}", False
    paused = stop.is_set()
    if paused or message.startswith("the run failed"):
        with contextlib.suppress(WorkbenchError):
            web.rollback("the bench stopped this good canary")
    clients = load.between(began, time.monotonic())
    console.log(f"good {version}: {'paused: ' if paused else ''}{message[:150]}")
    return {"rolled_back": back, "paused": paused,
            "failed_run": message.startswith("the run failed"),
            "seconds": time.monotonic() - began,
            "clients": len(clients), "failed": sum(not s.ok for s in clients),
            "message": message}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=None, help="repository with digits")
    parser.add_argument("--runs", type=int, default=3, help="rollouts per scenario and interval")
    parser.add_argument("--intervals", default="30,2", help="analysis intervals (s)")
    parser.add_argument("--rate", type=float, default=200.0, help="client requests/s in all")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--scrape", type=float, default=0.25,
                        help="seconds between the controller's looks (scrapes)")
    parser.add_argument("--good", type=int, default=10,
                        help="good canaries (no fault) run to the end at the shortest interval")
    parser.add_argument("--scenarios", default="",
                        help="comma-separated scenarios to run (default: all)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    repo = demo_repo(args.repo)
    home = Path(tempfile.mkdtemp(prefix="wb-bench-", dir="/tmp"))
    intervals = [float(i) for i in args.intervals.split(",")]
    rules = tuple(replace(r, max_ratio=1.0) if isinstance(r, ErrorRateRule) else r
                  for r in AnalysisSpec().rules)
    scenarios = {"100% errors": (FAULTY, "--fault-error-rate 1"),
                 "5% errors": (FAULTY, "--fault-error-rate 0.05"),
                 "+140 ms latency": (FAULTY, "--fault-latency-ms 140"),
                 GRADED: (FAULTY, ""),
                 "degraded 1.2.0": ("1.2.0", "")}
    unknown = set(args.scenarios.split(",")) - set(scenarios) if args.scenarios else set()
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(scenarios)}")
    if args.scenarios:
        scenarios = {k: v for k, v in scenarios.items() if k in args.scenarios.split(",")}
    slow_rules = tuple(replace(r, max_ms=LATENCY_MAX_MS) if isinstance(r, LatencyRule) else r
                       for r in rules)
    manager = DeploymentManager(home, repo=repo,
                                backend_factory=lambda name, options: faulty_backend(home))
    results: dict[tuple[str, float], list[dict[str, object]]] = {}
    refused: dict[str, str] = {}
    good: list[dict[str, object]] = []
    errors: list[str] = []
    started = time.monotonic()
    try:
        with console.status("creating the deployment (blue: digits 1.0.0)…"):
            web = manager.create("bench", "digits", "1.0.0", timeout=300)
        limit = 180.0 + (args.runs * len(scenarios) * len(intervals) + args.good) * 90.0
        with PacedLoad(web.url, "digits", args.rate, args.threads, limit) as load:
            time.sleep(2.0)
            with console.status("degraded 1.2.0, fully verified…"):
                outcome = one_run(web, "1.2.0", "", AnalysisSpec(steps=(10, 50, 100)), load)
            refused["degraded"] = str(outcome.get("refused", "not refused"))
            for interval in intervals:
                spec = AnalysisSpec(steps=(10, 50, 100), interval=interval, rules=rules,
                                    scrape=args.scrape)
                for run in range(args.runs):
                    for name, (version, faults) in scenarios.items():
                        if name == GRADED:
                            continue  # on a deployment of its own, below
                        if "latency" in name:
                            spec = replace(spec, rules=slow_rules)
                        else:
                            spec = replace(spec, rules=rules)
                        with console.status(f"interval {interval:g} s, run {run + 1}/{args.runs}: "
                                            f"{name}…"):
                            guarded_run(web, name, interval, version, faults, spec, load,
                                        results, errors)
            if GRADED in scenarios:
                graded_runs(manager, rules, intervals, args, results, errors)
            good_spec = AnalysisSpec(steps=(10, 50, 100), interval=min(intervals), rules=rules,
                                     scrape=args.scrape)
            for run in range(args.good):  # promoted, each is stable for the next
                with console.status(f"good canary {run + 1}/{args.good}…"):
                    good.append(good_run(web, good_spec, load))
            sent = len(load.samples) / (time.monotonic() - load.began)
    finally:
        for name in manager.names():
            manager.delete(name)
        shutil.rmtree(home, ignore_errors=True)

    elapsed = time.monotonic() - started
    table = Table(title=f"failing canaries rolled back ({args.runs} runs each, "
                        f"{args.rate:g} client requests/s asked, {sent:.0f} sent)",
                  title_justify="left")
    for column in ("scenario", "interval (s)",
                   "first to last request reaching it, median / max (s)",
                   "of which: to the deciding look / from it to the last request, median (s)",
                   "first bad request to rollback done, median / max (s)",
                   "requests reaching it, median / max", "failed client requests"):
        table.add_column(column)
    figures: dict[str, object] = {}
    for (name, interval), runs in results.items():
        secs = [float(r["seconds"]) for r in runs]  # type: ignore[arg-type]
        done = [float(r["done"]) for r in runs]  # type: ignore[arg-type]
        reached = [float(r["reached"]) for r in runs]  # type: ignore[arg-type]
        failed = sum(int(r["failed"]) for r in runs)  # type: ignore[call-overload]
        clients = sum(int(r["clients"]) for r in runs)  # type: ignore[call-overload]
        detect = [float(r["detect"]) for r in runs]  # type: ignore[arg-type]
        switch = [float(r["switch"]) for r in runs]  # type: ignore[arg-type]
        figures[f"{name} @ {interval:g}s"] = {
            "seconds_median": statistics.median(secs), "seconds_max": max(secs),
            "seconds": secs, "detect_median": statistics.median(detect),
            "switch_median": statistics.median(switch),
            "done_median": statistics.median(done), "done_max": max(done),
            "reached_median": statistics.median(reached), "reached_max": max(reached),
            "failed": failed, "clients": clients}
        table.add_row(name, f"{interval:g}", f"{statistics.median(secs):.2f} / {max(secs):.2f}",
                      f"{statistics.median(detect):.2f} / {statistics.median(switch):.2f}",
                      f"{statistics.median(done):.2f} / {max(done):.2f}",
                      f"{statistics.median(reached):.0f} / {max(reached):.0f}",
                      f"{failed} of {clients}")
    if good:
        back = sum(bool(r["rolled_back"]) for r in good)
        paused = sum(bool(r["paused"]) for r in good)
        broken = sum(bool(r["failed_run"]) for r in good)
        failed = sum(int(r["failed"]) for r in good)  # type: ignore[call-overload]
        clients = sum(int(r["clients"]) for r in good)  # type: ignore[call-overload]
        table.add_row(f"good (no fault), {len(good)} canaries", f"{min(intervals):g}",
                      f"{back} rolled back, {paused} paused, {broken} failed runs",
                      "-", "-", "-", f"{failed} of {clients}")
        figures["good"] = {"canaries": len(good), "rolled_back": back, "paused": paused,
                           "failed_runs": broken, "failed": failed, "clients": clients,
                           "seconds_median": statistics.median(float(r["seconds"])  # type: ignore[arg-type]
                                                               for r in good)}
    for name, why in refused.items():
        table.add_row(name, "-", "refused before traffic", "-", "-", "0", "0")
        figures[name] = {"refused": why}
        console.log(f"{name}: {why[:200]}")
    console.print(table)
    for error in errors:
        console.log(f"failed run: {error}")
    figures["failed_runs"] = errors
    console.log(f"done in {elapsed:.0f} s")
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
