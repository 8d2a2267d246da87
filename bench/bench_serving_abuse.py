"""A serving instance under pressure: alias pinning throughput and liveness under huge bodies.

    uv run python bench/bench_serving_abuse.py [--repo DIR] [--seconds 5] [--bodies 8]

One ``workbench serve`` of the demo's digits model (1.0.0 active, 1.1.0 loaded as
``canary``), pinned to CPU 0, and ``wrk`` on CPU 1 (``--no-pin`` to turn off):

- alias pinning: req/s of one-row JSON requests unpinned, pinned by version
  (``x-model-version: 1.1.0``) and pinned by alias (``x-model-version: canary``), with
  the alias/version ratio (reading ``aliases.json`` per request cost a third);
- large bodies: ``--bodies`` clients each post a ~50 MB JSON tensor at once while
  another checks ``/v2/health/live`` every 10 ms: the slowest check and how many took
  over 100 ms (decoded on the event loop, each body stalled it for ~0.25 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import CASES, PY, System, free_port, json_body, run_wrk


def pin_script(workdir: Path, body: bytes, header: str | None) -> Path:
    path = workdir / f"pin-{header or 'none'}.body"
    path.write_bytes(body)
    lines = [f'local f = assert(io.open("{path}", "rb"))', 'wrk.body = f:read("*all")',
             "f:close()", 'wrk.method = "POST"',
             'wrk.headers["Content-Type"] = "application/json"']
    if header:
        lines.append(f'wrk.headers["x-model-version"] = "{header}"')
    script = path.with_suffix(".lua")
    script.write_text("\n".join(lines) + "\n")
    return script


def large_bodies(url: str, count: int) -> tuple[float, int, int]:
    """(slowest liveness check in s, checks over 100 ms, checks) while ``count`` 50 MB
    bodies are posted at once."""
    import httpx
    import orjson

    x = np.random.default_rng(0).random((40_000, 64), dtype=np.float32)
    body = orjson.dumps({"inputs": [{"name": "nope", "datatype": "FP32",
                                     "shape": list(x.shape), "data": x.tolist()}]})

    def post() -> None:
        httpx.post(url + "/v2/models/digits/infer", content=body, timeout=300)

    threads = [threading.Thread(target=post) for _ in range(count)]
    for thread in threads:
        thread.start()
    latencies = []
    with httpx.Client(timeout=60) as client:
        while any(thread.is_alive() for thread in threads):
            started = time.perf_counter()
            client.get(url + "/v2/health/live")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    return max(latencies), sum(t > 0.1 for t in latencies), len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", help="model repository with digits (default: build the demo)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bodies", type=int, default=8)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    server_cpu, wrk_cpu = (None, None) if args.no_pin else (0, 1)
    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp:
        work = Path(tmp)
        repo = args.repo
        if repo is None:
            from workbench.model.demo import build_demo_repository

            repo = str(work / "repo")
            build_demo_repository(repo)
        case = CASES["digits"]
        body = json_body(case, case.sample())
        system = System("workbench", [PY, "-m", "workbench", "serve", "--repo", repo,
                                      "--model", "digits", "--version", "1.0.0",
                                      "--load", "canary", "--max-body-mb", "64",
                                      "--no-access-log"],
                        "/v2/health/ready", "/v2/models/digits/infer", body)
        system.port = free_port()
        system.argv += ["--port", str(system.port)]
        system.start(work, server_cpu)
        try:
            rows = []
            for label, header in (("unpinned", None), ("pinned by version", "1.1.0"),
                                  ("pinned by alias", "canary")):
                script = pin_script(work, body, header)
                rps, p50, p99, errors = run_wrk(system.url + system.path, script,
                                                args.concurrency, args.seconds, wrk_cpu)
                rows.append((label, rps, p50, p99, errors))
            slowest, slow, checks = large_bodies(system.url, args.bodies)
        finally:
            system.stop()
    print(f"\n| digits, c={args.concurrency} | req/s | p50 ms | p99 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, rps, p50, p99, errors in rows:
        print(f"| {label} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errors} |")
    print(f"\n- alias / version pinning: {rows[2][1] / rows[1][1]:.2f}x")
    print(f"- {args.bodies} x 50 MB JSON bodies at once: slowest liveness check "
          f"{slowest * 1000:.0f} ms, {slow} of {checks} checks over 100 ms")
    print(f"\ncommand: `uv run python bench/bench_serving_abuse.py --seconds {args.seconds:g} "
          f"--bodies {args.bodies}`")


if __name__ == "__main__":
    main()
