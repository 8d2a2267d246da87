"""How fast the ``workbench`` command line answers, next to ``python -c pass``, in one run.

    uv run python bench/bench_cli.py [--repo DIR] [--runs 7] [--rollbacks 5] [--busy 4]

Every figure is the median wall time of fresh processes, from launch to exit, with
bytecode caches warm (one untimed run of each command first, as any second use
is). Measured:

- ``python -c pass``, ``python -c "import workbench"`` and ``workbench --help``;
- verbs that start no instance, on a real deployment made by the script
  (ProcessBackend: ``workbench serve`` processes of the demo digits model behind
  nginx, created and updated with ``workbench deploy`` as a user would, so no
  instance is a child of this script): ``status``, ``deploy status``, ``history``,
  ``models list``, ``deploy weight``, ``promote``, ``rollback``;
- ``workbench rollback NAME`` from keystroke to 100% of requests on stable: after
  each ``promote``, client threads send requests through the router and record the
  colour that answered; the figure is the start of the last request, issued after
  the keystroke, that green still answered (0 when none did) — target <= 1 s.

With ``--busy N`` the rollbacks run while N busy-loop processes keep the cores
occupied (load average about N); each loop ends by itself after ``--busy-limit``
seconds, and all are stopped when the rollbacks are done.

Each time is also shown as a multiple of ``python -c pass``. The deployment and its
processes are deleted at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_cutover import Load, demo_repo
from rich.console import Console
from rich.table import Table

from workbench.deploy.manager import DeploymentManager

console = Console()
NAME = "bench"


def workbench_command() -> list[str]:
    script = Path(sys.executable).with_name("workbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "workbench"]


def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> tuple[float, str]:
    """Seconds from launch to exit of ``argv`` (which must succeed), and its output."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return seconds, proc.stdout


def timed(argv: list[str], env: dict[str, str]) -> float:
    return run(argv, env)[0]


def median_of(argv: list[str], env: dict[str, str], runs: int) -> float:
    timed(argv, env)  # untimed: writes bytecode caches, warms the page cache
    return statistics.median(timed(argv, env) for _ in range(runs))


BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\n" \
            "while time.monotonic() < end:\n    pass\n"


class Busy:
    """``count`` busy-loop processes, each ending by itself after ``limit`` seconds."""

    def __init__(self, count: int, limit: float) -> None:
        self.count, self.limit = count, limit
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Busy:
        self._procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(self.limit)])
                       for _ in range(self.count)]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.wait(10)


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=None, help="repository with digits")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per read-only command")
    parser.add_argument("--rollbacks", type=int, default=5,
                        help="update/weight/promote/rollback cycles")
    parser.add_argument("--threads", type=int, default=2, help="client threads during rollbacks")
    parser.add_argument("--busy", type=int, default=0,
                        help="busy-loop processes running during the rollbacks (0: none)")
    parser.add_argument("--busy-limit", type=float, default=900.0,
                        help="seconds after which each busy loop ends by itself")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    repo = demo_repo(args.repo)
    home = Path(tempfile.mkdtemp(prefix="wb-bench-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(WORKBENCH_HOME=str(home), WORKBENCH_REPO=str(repo), COLUMNS="80")
    wb = workbench_command()
    python = [sys.executable]
    figures: dict[str, float] = {}
    rollback_converge: list[float] = []
    failed = requests = 0
    loads: list[float] = []
    manager = DeploymentManager(home, repo=repo)
    try:
        with console.status("python, import workbench, --help…"):
            figures["python -c pass"] = median_of([*python, "-c", "pass"], env, args.runs)
            figures['python -c "import workbench"'] = median_of(
                [*python, "-c", "import workbench"], env, args.runs)
            figures["workbench --help"] = median_of([*wb, "--help"], env, args.runs)
        with console.status("creating the deployment (blue: digits 1.0.0)…"):
            run([*wb, "deploy", "create", NAME, "--model", "digits", "--version", "1.0.0"], env,
                timeout=400)
        url = json.loads(run([*wb, "status", NAME, "--json"], env)[1])["url"]
        with console.status("read-only verbs…"):
            for verb in (["status", NAME], ["deploy", "status"], ["history", NAME],
                         ["models", "list"]):
                figures["workbench " + " ".join(verb)] = median_of([*wb, *verb], env, args.runs)
        changing: dict[str, list[float]] = {"weight": [], "promote": [], "rollback": []}
        with Busy(args.busy, args.busy_limit):
            if args.busy:
                with console.status(f"{args.busy} busy loops: waiting for the load average…"):
                    waited = time.monotonic()
                    while load_average() < args.busy - 0.5 and time.monotonic() - waited < 90:
                        time.sleep(1.0)
            for cycle in range(args.rollbacks):
                with console.status(f"cycle {cycle + 1}/{args.rollbacks}: starting green…"):
                    run([*wb, "deploy", "update", NAME, "--version", "1.1.0"], env, timeout=400)
                changing["weight"].append(timed([*wb, "deploy", "weight", NAME, "10"], env))
                changing["promote"].append(timed([*wb, "promote", NAME], env))
                with Load(url, "digits", args.threads, limit=60.0) as load:
                    time.sleep(1.0)
                    loads.append(load_average())
                    t0 = time.monotonic()
                    changing["rollback"].append(timed([*wb, "rollback", NAME], env))
                    time.sleep(1.5)
                    after = load.between(t0, time.monotonic())
                stale = [s.start for s in after if s.ok and s.color != "blue"]
                rollback_converge.append(max(stale) - t0 if stale else 0.0)
                failed += sum(not s.ok for s in load.samples)
                requests += len(load.samples)
                console.log(f"rollback {cycle + 1}: command {changing['rollback'][-1] * 1000:.0f} "
                            f"ms, 100% on stable after {rollback_converge[-1] * 1000:.0f} ms "
                            f"(load average {loads[-1]:.1f})")
        for verb, name in (("weight", f"workbench deploy weight {NAME} 10"),
                           ("promote", f"workbench promote {NAME}"),
                           ("rollback", f"workbench rollback {NAME}")):
            figures[name] = statistics.median(changing[verb])
        figures[f"workbench rollback {NAME}: keystroke → 100% on stable"] = statistics.median(
            rollback_converge)
    finally:
        for name in manager.names():
            manager.delete(name)
        shutil.rmtree(home, ignore_errors=True)

    base = figures["python -c pass"]
    targets = {"workbench --help": "≤ 300 ms",
               f"workbench rollback {NAME}: keystroke → 100% on stable": "≤ 1000 ms"}
    table = Table(title=f"workbench command line, median of {args.runs} runs "
                        f"({args.rollbacks} for weight/promote/rollback)")
    for column in ("command", "median", "× python -c pass", "target"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for name, seconds in figures.items():
        target = targets.get(name, "" if name.startswith("python") else "≤ 1000 ms")
        table.add_row(name, f"{seconds * 1000:.0f} ms", f"{seconds / base:.1f}×", target)
    console.print(table)
    console.print(f"requests through the router during the rollbacks: {requests} ({failed} failed); "
                  f"keystroke → 100% on stable, median "
                  f"{statistics.median(rollback_converge) * 1000:.0f} ms, "
                  f"worst {max(rollback_converge) * 1000:.0f} ms over {len(rollback_converge)} "
                  f"rollbacks; load average at the keystrokes "
                  f"{min(loads):.1f}–{max(loads):.1f} ({args.busy} busy loops)")
    if args.json:
        print(json.dumps({**figures, "requests": requests, "failed": failed,
                          "rollback_converge": rollback_converge, "load_average": loads},
                         indent=2))


if __name__ == "__main__":
    main()
