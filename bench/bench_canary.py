"""How fast and how safely a failing canary is rolled back, measured in one run.

    uv run --extra cpu --extra notebook --extra dev python bench/bench_canary.py \
        [--repo DIR] [--runs 3] [--interval 2] [--threads 2]

Blue serves digits 1.0.0 behind real nginx; real ``workbench serve`` processes. Client
threads send inference requests through the router the whole time. Each run rolls out
a bad candidate as a canary (steps 10,50,100) and lets the controller judge it:

- ``faulty``: 1.1.0 served with ``--fault-error-rate 1`` (every inference answers 500);
  verification checks only readiness, so the fault shows under traffic — the error-rate
  rule must catch it;
- ``degraded``: 1.2.0 (trained on shuffled labels), judged by the agreement and accuracy
  rules on the demo's labelled test set.

Reported per scenario: time from the candidate's first weight (its first bad request
can come no earlier) to the rollback being done (all traffic on stable, candidate
stopped), in seconds and in analysis intervals (target <= 2); the share of client
requests that reached the bad version (counted by the candidate's own metrics); failed
client requests (target 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_cutover import Load, demo_repo
from rich.console import Console
from rich.table import Table

from workbench.deploy import canary
from workbench.deploy.manager import DeploymentManager
from workbench.deploy.platforms.process.backend import ProcessBackend
from workbench.deploy.rollout.analysis import AnalysisSpec
from workbench.deploy.rollout.controller import Action, CanaryStatus, Stage

console = Console()
FAULTY = "1.1.0"


def faulty_backend(home: Path) -> ProcessBackend:
    """Instances of FAULTY answer 500 to every inference (``--fault-version``)."""
    wrapper = home / "faulty_serve.py"
    wrapper.write_text(
        "import sys, os\n"
        "args = [sys.executable, '-m', 'workbench', *sys.argv[1:]]\n"
        f"args += ['--fault-error-rate', '1', '--fault-version', {FAULTY!r}]\n"
        "os.execv(sys.executable, args)\n"
    )
    return ProcessBackend(home, command=[sys.executable, str(wrapper)])


def one_run(web, version: str, spec: AnalysisSpec, load: Load) -> dict[str, float]:  # type: ignore[no-untyped-def]
    checks = ("ready",) if version == FAULTY else ("ready", "deep_health", "agreement")
    web.update(version, timeout=300, checks=checks)
    marks: dict[str, float] = {}

    def listen(status: CanaryStatus, action: Action) -> None:
        if action.kind == "advance" and "exposed" not in marks:
            marks["exposed"] = time.monotonic()
        if action.kind == "rollback":
            marks["rolled_back"] = time.monotonic()

    t0 = time.monotonic()
    status = canary.run(web, spec, on_tick=listen)
    t1 = time.monotonic()
    if status.stage is not Stage.ROLLED_BACK:
        raise SystemExit(f"{version} was not rolled back: {status.stage.value} {status.message}")
    reached = sum(
        r["samples"] for h in web.history() if h.action == "canary" and h.time >= time.time() - (t1 - t0) - 1
        for r in h.details.get("results", []) if r["rule"] == "error_rate"
    )
    clients = load.between(marks["exposed"], t1)
    seconds = marks["rolled_back"] - marks["exposed"]
    console.log(f"{version}: {status.message}")
    time.sleep(1.0)
    return {
        "seconds": seconds,
        "intervals": seconds / spec.interval,
        "reached": reached,
        "clients": len(clients),
        "failed": sum(not s.ok for s in clients),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=None, help="repository with digits")
    parser.add_argument("--runs", type=int, default=3, help="rollouts per scenario")
    parser.add_argument("--interval", type=float, default=2.0, help="analysis interval (s)")
    parser.add_argument("--threads", type=int, default=2, help="client threads")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    from workbench.model.demo import digits_dataset

    repo = demo_repo(args.repo)
    home = Path(tempfile.mkdtemp(prefix="wb-bench-", dir="/tmp"))
    _, _, x_test, y_test = digits_dataset()
    labelled = home / "digits-test.npz"
    np.savez(labelled, x=x_test, labels=y_test)
    base = AnalysisSpec(steps=(10, 50, 100), interval=args.interval)
    base = base.with_flags()
    scenarios = {
        "faulty": (FAULTY, base),
        "degraded": ("1.2.0", replace(base, labelled=str(labelled))),
    }
    manager = DeploymentManager(home, repo=repo,
                                backend_factory=lambda name, options: faulty_backend(home))
    results: dict[str, list[dict[str, float]]] = {name: [] for name in scenarios}
    started = time.monotonic()
    try:
        with console.status("creating the deployment (blue: digits 1.0.0)…"):
            web = manager.create("bench", "digits", "1.0.0", timeout=300)
        limit = 120.0 + args.runs * len(scenarios) * 120.0
        with Load(web.url, "digits", args.threads, limit) as load:
            for run in range(args.runs):
                for name, (version, spec) in scenarios.items():
                    with console.status(f"run {run + 1}/{args.runs}: {name} canary of {version}…"):
                        results[name].append(one_run(web, version, spec, load))
    finally:
        for name in manager.names():
            manager.delete(name)
        shutil.rmtree(home, ignore_errors=True)

    table = Table(title=f"failing canaries rolled back ({args.runs} runs each, "
                        f"interval {args.interval:g} s, {args.threads} client threads)",
                  title_justify="left")
    for column in ("scenario", "to rollback, median / max (s)", "in intervals, median / max",
                   "client requests reaching it", "failed client requests"):
        table.add_column(column)
    figures: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        secs = [r["seconds"] for r in runs]
        ints = [r["intervals"] for r in runs]
        reached = sum(r["reached"] for r in runs)
        clients = sum(r["clients"] for r in runs)
        failed = sum(int(r["failed"]) for r in runs)
        figures[name] = {"seconds_median": statistics.median(secs), "seconds_max": max(secs),
                         "intervals_median": statistics.median(ints), "intervals_max": max(ints),
                         "reached": reached, "clients": clients, "failed": failed}
        table.add_row(name, f"{statistics.median(secs):.1f} / {max(secs):.1f}",
                      f"{statistics.median(ints):.2f} / {max(ints):.2f}",
                      f"{reached:.0f} of {clients} ({reached / max(clients, 1):.1%})",
                      str(failed))
    console.print(table)
    console.log(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
