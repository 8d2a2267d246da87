"""How an OCR pipeline canary judged by CER ends under live traffic, measured in one run.

    uv run --extra cpu --extra notebook --extra dev python bench/bench_ocr_canary.py \
        [--runs 1] [--interval 2] [--pages 3] [--limit 1500] [--json]

A temporary repository holds the real PP-OCR exports as the ``ocr`` pipelines 4.0.0 (v4
det/cls/rec) and 5.0.0 (v5 det/rec, v2 cls), and 5.0.1: v5 whose recogniser has its
character table shifted by one (:mod:`tests.deploy._ocr_canary`, shared with
``tests/deploy/test_ocr_canary_live.py``). The ``ocr`` deployment runs behind real nginx
with real ``workbench serve`` processes (stages in threads); ``--pages`` labelled pages
are rendered (DejaVu fonts, two known lines each) and one client sends them through the
router, one request after another, the whole time of each run. Scenarios, ``--runs`` each:

- ``v4 -> v5``: 5.0.0 verified on the pages (agreement reported, not gated), then a canary
  (steps 50, 100; one decision every ``--interval`` seconds) judged on agreement with
  stable (CER <= 0.5) and on CER against the pages (at most 5 points above stable's);
  expected: promoted;
- ``v5 -> 5.0.1 (wrong dictionary)``: 5.0.1 let through on readiness alone, the same
  canary with agreement CER <= 0.05; expected: rolled back at the first step.

Reported per scenario: each run's outcome, the seconds from the canary's start to its
verdict (median / max; verification not included), the candidate's weight at the
verdict, the client's requests by the version that answered and those that failed (from
the candidate's verification to the verdict), and both sides' CER as the accuracy rule
recorded it at the verdict (its last look; median over runs). The load average is printed
with the table: at seconds per image, the figures follow the machine's load.

Each run is bounded by ``--limit`` seconds (a canary still going then is stopped and
rolled back, reported as ``timed out``), the client by the same time and 5,000 requests.
Everything lives in one temporary directory, removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "3")

import psutil
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from tests.deploy import _ocr_canary as shared
from workbench._paddle import import_paddle
from workbench.deploy import canary
from workbench.deploy.rollout.phases import Phase
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.rollout.decisions import Action, CanaryStatus

console = Console(width=160)
CER = re.compile(r"CER ([\d.]+)% vs stable ([\d.]+)%")
BUDGET = 5000  # client requests per run at the most


@dataclass(frozen=True)
class Scenario:
    name: str
    stable: str
    candidate: str
    expected: Phase
    max_cer: float  # the agreement rule's bound
    verify_on_pages: bool  # verified on the labelled pages (else on readiness alone)


SCENARIOS = (
    Scenario("v4 -> v5", "4.0.0", "5.0.0", Phase.PROMOTED, 0.5, True),
    Scenario(f"v5 -> {shared.DEGRADED} (wrong dictionary)", "5.0.0", shared.DEGRADED,
             Phase.ROLLED_BACK, 0.05, False),
)


def one_run(manager: DeploymentManager, scenario: Scenario, pages: Path, interval: float,
            limit: float, say: Any) -> dict[str, Any]:
    """One canary of ``scenario`` under the client's traffic: its figures."""
    say(f"starting stable {scenario.stable}…")
    web = shared.deployed(manager, scenario.stable)
    began = time.monotonic()
    with shared.Clients(web.url, pages, limit=limit, budget=BUDGET) as clients:
        say(f"verifying {scenario.candidate}…")
        if scenario.verify_on_pages:
            web.update(scenario.candidate, sample_file=pages, min_agreement=0.0, timeout=900)
        else:
            web.update(scenario.candidate, checks=("ready",), timeout=900)
        if web.phase is not Phase.VERIFIED:
            return {"outcome": "refused", "message": web.state.rollout.message}
        history = len(web.history())
        stop = threading.Event()
        timer = threading.Timer(max(1.0, limit - (time.monotonic() - began)), stop.set)
        timer.daemon = True

        def tick(status: CanaryStatus, action: Action) -> None:
            say(f"canary: {action.kind} (weight {status.weight}), client requests "
                f"{clients.total}, failed {clients.failed}")

        timer.start()
        started = time.monotonic()
        try:
            status = canary.run(web, shared.spec(pages, max_cer=scenario.max_cer,
                                                 interval=interval), stop=stop, on_tick=tick)
        finally:
            timer.cancel()
        seconds = time.monotonic() - started
        counts = clients.counts()
    outcome = status.stage.value if status.done else "timed out"
    if not status.done:
        with contextlib.suppress(WorkbenchError):
            web.rollback("the bench run's time limit")
    accuracy = [r for h in web.history()[history:] for r in h.details.get("results", [])
                if r["rule"] == "accuracy" and CER.search(str(r["message"]))]
    cer = CER.search(str(accuracy[-1]["message"])) if accuracy else None
    by_version: dict[str, int] = {}
    for (code, version), n in counts.items():
        if code == 200:
            by_version[version] = by_version.get(version, 0) + n
    return {
        "outcome": outcome, "expected": status.stage is scenario.expected,
        "seconds": seconds, "weight": status.weight, "requests": by_version,
        "failed": sum(n for (code, _), n in counts.items() if code != 200),
        "cer_candidate": float(cer.group(1)) if cer else None,
        "cer_stable": float(cer.group(2)) if cer else None,
        "message": status.message,
    }


def sweep(folder: Path) -> None:
    """End any process still running from ``folder`` (an instance or router started before
    an interrupt recorded it), by its pid."""
    mine = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["pid"] != mine and str(folder) in " ".join(proc.info["cmdline"] or ()):
                proc.terminate()
                try:
                    proc.wait(10)
                except psutil.TimeoutExpired:
                    proc.kill()


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}%" if values else "-"


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace,
           load: tuple[float, float]) -> dict[str, Any]:
    """Prints the table; returns the figures."""
    table = Table(title=f"OCR pipeline canaries judged by CER ({args.pages} labelled pages, "
                        f"interval {args.interval:g} s; load average {load[0]:.2f} at the start, "
                        f"{load[1]:.2f} at the end, {os.cpu_count()} cores)",
                  title_justify="left")
    for column in ("scenario", "outcome per run", "seconds to the verdict, median / max",
                   "weight at the verdict", "client requests by version",
                   "failed client requests", "CER stable / candidate (accuracy rule)"):
        table.add_column(column)
    figures: dict[str, Any] = {}
    for name, done in runs.items():
        judged = [r for r in done if "seconds" in r]
        seconds = [float(r["seconds"]) for r in judged]
        requests: dict[str, int] = {}
        for r in judged:
            for version, n in r["requests"].items():
                requests[version] = requests.get(version, 0) + n
        failed = sum(int(r["failed"]) for r in judged)
        stable = [r["cer_stable"] for r in judged if r["cer_stable"] is not None]
        candidate = [r["cer_candidate"] for r in judged if r["cer_candidate"] is not None]
        outcomes = ", ".join(r["outcome"] + ("" if r.get("expected", False) else " (!)")
                             for r in done) or "not run"
        table.add_row(
            name, outcomes,
            f"{statistics.median(seconds):.0f} / {max(seconds):.0f}" if seconds else "-",
            ", ".join(str(r["weight"]) for r in judged) or "-",
            ", ".join(f"{v}: {n}" for v, n in sorted(requests.items())) or "-",
            f"{failed} of {failed + sum(requests.values())}",
            f"{median(stable)} / {median(candidate)}")
        figures[name] = {
            "runs": done, "outcomes": [r["outcome"] for r in done],
            "seconds_median": statistics.median(seconds) if seconds else None,
            "seconds_max": max(seconds) if seconds else None,
            "requests": requests, "failed": failed,
            "cer_stable_median": statistics.median(stable) if stable else None,
            "cer_candidate_median": statistics.median(candidate) if candidate else None}
    console.print(table)
    figures["load_average"] = {"start": load[0], "end": load[1], "cores": os.cpu_count()}
    return figures


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="canaries per scenario (1-10)")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between the canary's decisions (1-120)")
    parser.add_argument("--pages", type=int, default=len(shared.PAGES),
                        help="labelled pages the client sends and the accuracy rule reads (1-12)")
    parser.add_argument("--limit", type=float, default=1500.0,
                        help="seconds one run may take at the most (60-3600)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    for name, value, low, high in (("--runs", args.runs, 1, 10), ("--interval", args.interval, 1, 120),
                                   ("--pages", args.pages, 1, 12), ("--limit", args.limit, 60, 3600)):
        if not low <= value <= high:
            parser.error(f"{name} must be in {low}..{high}, not {value}")
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        raise SystemExit("nginx is not installed (e.g. apt-get install nginx-light)")

    # the controller's warnings (a busy instance missing its metrics scrape) above the bar
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    with console.status("importing Paddle…"):
        import_paddle()
    # after Paddle's import, which resets SIGTERM's handler: both end the bench through
    # its clean-up (a shell may also have started it with SIGINT ignored)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    top = Path(tempfile.mkdtemp(prefix="wb-ocr-", dir="/tmp"))  # short: the router's socket
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in SCENARIOS}
    manager: DeploymentManager | None = None
    interrupted = False
    started = time.monotonic()
    try:
        with console.status("publishing the OCR pipelines 4.0.0, 5.0.0 and "
                            f"{shared.DEGRADED} (the real exports)…"):
            shared.publish_repo(top / "repo")
        pages = shared.render_pages(top / "pages", args.pages)
        (top / "home").mkdir()
        manager = shared.serving_manager(top / "home", top / "repo")
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("", total=args.runs * len(SCENARIOS))
            for run in range(args.runs):
                for scenario in SCENARIOS:
                    label = f"{scenario.name}, run {run + 1}/{args.runs}"

                    def say(text: str, label: str = label) -> None:
                        progress.update(task, description=f"{label}: {text}")

                    try:
                        outcome = one_run(manager, scenario, pages, args.interval, args.limit, say)
                    except (WorkbenchError, TimeoutError) as exc:
                        console.log(f"{label}: the run failed: {exc}")
                        outcome = {"outcome": f"failed: {exc}"}
                    console.log(f"{label}: {outcome['outcome']}: {str(outcome.get('message'))[:200]}")
                    runs[scenario.name].append(outcome)
                    progress.advance(task)
    except KeyboardInterrupt:
        interrupted = True
        console.log("interrupted: cleaning up")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up is bounded: let it end
        with console.status("cleaning up (stopping the deployment, removing the temp dir)…"):
            if manager is not None:
                for name in manager.names():
                    with contextlib.suppress(WorkbenchError):
                        manager.delete(name)
            sweep(top)
            shutil.rmtree(top, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        console.log("interrupted: the figures are those of the runs that ended")
    figures = report(runs, args, (load_start, os.getloadavg()[0]))
    console.log(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    if interrupted:
        raise SystemExit(130)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
