"""Serving throughput and latency, side by side, in one run, with one load generator.

    uv run python bench/bench_serving.py [--repo DIR] [--seconds 4] [--models digits,resnet]
        [--digits-concurrency 1,16,64] [--resnet-concurrency 1,4] [--only LABEL,...]
        [--no-peers] [--peers-cache DIR] [--cpu-threads 1] [--no-pin] [--out FILE.md]

For each model (``digits``: 64 features, overhead-bound; ``resnet``: ResNet-18 at
3x224x224, compute-bound), every system serves the same Paddle predictor (the
runtime's LoadedVersion, ``--cpu-threads`` math threads, one clone) to the same load
generator, ``wrk`` with a Lua body, one connection per concurrent client:

- ``in-process``: threads calling ``hub.predict`` directly: the limit, no HTTP;
  measured in a fresh process before the servers and again after them (the machine's
  load drifts), the ratios use the better of the two
- ``workbench batch bin``: ``workbench serve --isolation thread``, dynamic batching,
  binary tensor extension (the predictor inside the server process)
- ``workbench batch json``: the same, JSON tensors
- ``workbench nobatch json``: the same with ``--no-batching``, JSON tensors
- ``workbench process x1 bin`` / ``x2 bin``: ``workbench serve --isolation process
  --workers 1|2``: the predictors in worker processes, tensors through shared memory;
  x2 may use both cores (it is not pinned), so its ratio is the scaling with cores
- ``naive fastapi``: FastAPI + uvicorn, a sync endpoint calling the predictor per request
- ``litserve``: LitServe serving the same predictor (its defaults: no batching)
- ``mlserver x1 json`` / ``x2 json``: MLServer 1.7, a custom runtime around the same
  predictor, ``parallel_workers`` 1|2, JSON tensors (MLServer's REST API has no binary
  tensor extension), its defaults otherwise (no adaptive batching)
- ``kserve x1 bin`` / ``x2 bin``: KServe 0.21's ``ModelServer`` with a custom ``Model``
  around the same predictor, binary tensors, ``workers`` 1|2 (KServe's multi-process REST
  server, each process with its own predictor)

The peers (``bench/peers.py``) run in virtual environments this script makes once with
``uv`` under ``--peers-cache`` (default ``~/.cache/workbench-bench``): the peer, and the
project's own paddlepaddle and numpy versions; never in the project's lock. ``--no-peers``
skips them; a peer that cannot be installed, start or answer correctly is reported as
failed, and the run goes on.

The systems under test (and the in-process threads) are pinned to CPU 0 and wrk to
CPU 1 (``--no-pin`` to turn off), so each gets one core; the x2 rows (two worker
processes) are not pinned, so they show the scaling with cores. Requests carry one row (one
image for resnet); JSON floats are rounded like normalised pixels (4 decimals for
digits, 3 for resnet). Every system's answer is checked against the in-process
output before it is measured. Prints markdown tables (req/s per concurrency; req/s, p50,
p99 in ms and errors per run; workbench process x1 and x2 against every peer) and the
ratios the targets speak of. The defaults are sized for about ten minutes on a quiet
2-core machine once the peers' environments are cached; the run prints its duration.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PEERS_PY = Path(__file__).resolve().with_name("peers.py")


# -- models and payloads ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    name: str
    input: str
    shape: tuple[int, ...]
    decimals: int

    def sample(self) -> np.ndarray:
        x = np.random.default_rng(7).random(self.shape, dtype=np.float32)
        return np.round(x, self.decimals).astype(np.float32)


CASES = {
    "digits": ModelCase("digits", "x", (1, 64), 4),
    "resnet": ModelCase("resnet", "image", (1, 3, 224, 224), 3),
}


def json_body(case: ModelCase, x: np.ndarray) -> bytes:
    values = ",".join(f"{v:.{case.decimals}f}".rstrip("0").rstrip(".") or "0"
                      for v in x.ravel().tolist())
    header = json.dumps({"name": case.input, "datatype": "FP32", "shape": list(x.shape)})
    return f'{{"inputs":[{header[:-1]},"data":[{values}]}}]}}'.encode()


def binary_body(case: ModelCase, x: np.ndarray) -> tuple[bytes, int]:
    blob = x.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{"name": case.input, "datatype": "FP32", "shape": list(x.shape),
                    "parameters": {"binary_data_size": len(blob)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return header + blob, len(header)


# -- the comparison apps (run as subprocesses of this script) -----------------------------


def _load(repo: str, model: str, cpu_threads: int) -> Any:
    from workbench import ModelRepository, VersionHub

    hub = VersionHub(ModelRepository(repo), model, device="cpu", workers=1,
                     cpu_threads=cpu_threads)
    return hub.load("1.0.0")


def _decode(doc: dict[str, Any]) -> tuple[str, np.ndarray]:
    spec = doc["inputs"][0]
    return spec["name"], np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])


def _encode(name: str, y: np.ndarray) -> dict[str, Any]:
    return {"outputs": [{"name": name, "datatype": "FP32", "shape": list(y.shape),
                         "data": y.ravel().tolist()}]}


def run_naive(args: argparse.Namespace) -> None:
    """The common recipe: FastAPI, a sync endpoint, the predictor called per request."""
    import uvicorn
    from fastapi import FastAPI

    loaded = _load(args.repo, args.model, args.cpu_threads)
    out = loaded.outputs[0].name
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        name, x = _decode(body)
        return _encode(out, loaded.predict({name: x})[out])

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


try:  # LitServe pickles its API into a spawned worker: the class lives at module level
    import litserve as ls
except ImportError:  # pragma: no cover - a dev dependency
    ls = None

if ls is not None:

    class PaddleAPI(ls.LitAPI):  # type: ignore[misc]
        def configure(self, repo: str, model: str, cpu_threads: int) -> PaddleAPI:
            self.where = (repo, model, cpu_threads)
            return self

        def setup(self, device: str) -> None:
            self.loaded = _load(*self.where)
            self.out = self.loaded.outputs[0].name

        # LitServe reads these two annotations to type its endpoint: leave them out
        # (with postponed annotations they would be strings FastAPI cannot use).
        def decode_request(self, request):  # type: ignore[no-untyped-def]
            return _decode(request)

        def predict(self, item: Any) -> Any:
            name, x = item
            return self.loaded.predict({name: x})[self.out]

        def encode_response(self, output):  # type: ignore[no-untyped-def]
            return _encode(self.out, output)


def run_litserve(args: argparse.Namespace) -> None:
    """LitServe with its defaults (one worker, no batching) around the same predictor."""
    if ls is None:
        sys.exit("litserve is not installed")
    api = PaddleAPI().configure(args.repo, args.model, args.cpu_threads)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False,
               num_api_servers=1, log_level="warning")


# -- peers in throwaway environments ------------------------------------------------------

# What each peer's environment holds besides the project's paddlepaddle and numpy versions.
# MLServer 1.7's inference workers call asyncio.get_event_loop() before they run a loop,
# which uvloop 0.22 and later refuse: with them every worker dies at start.
PEERS: dict[str, list[str]] = {
    "mlserver": ["mlserver==1.7.*", "uvloop<0.22"],
    "kserve": ["kserve==0.21.*"],
}


class PeerUnavailable(Exception):
    """A peer's environment could not be made; the message says why."""


def peer_requirements(name: str) -> list[str]:
    pins = [f"{package}=={importlib.metadata.version(package)}"
            for package in ("paddlepaddle", "numpy")]
    return [*PEERS[name], *pins, "setuptools"]


def peer_python(name: str, cache: Path) -> Path:
    """The interpreter of ``name``'s cached environment, made with uv on first use."""
    requirements = peer_requirements(name)
    where = cache / f"{name}-py{sys.version_info.major}{sys.version_info.minor}"
    python = where / "bin" / "python"
    stamp = where / "bench-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    uv = shutil.which("uv")
    if uv is None:
        raise PeerUnavailable("uv is not on PATH (https://docs.astral.sh/uv/)")
    print(f"installing {' '.join(requirements)} into {where} (once) ...", flush=True)
    shutil.rmtree(where, ignore_errors=True)
    steps = [[uv, "venv", "-q", "--python", sys.executable, str(where)],
             [uv, "pip", "install", "-q", "--python", str(python), *requirements]]
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired as exc:
            raise PeerUnavailable(f"`{' '.join(argv[:3])}` took over 30 minutes") from exc
        if done.returncode != 0:
            reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
            raise PeerUnavailable(f"`{' '.join(argv[:3])} ...` failed: " + " / ".join(reason))
    stamp.write_text(wanted)
    return python


def peer_pythons(cache: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Every peer's interpreter, and why the ones that could not be installed are missing."""
    found, missing = {}, {}
    for name in PEERS:
        try:
            found[name] = peer_python(name, cache)
        except PeerUnavailable as exc:
            missing[name] = str(exc)
            print(f"{name} cannot be installed, its rows are reported as failed: {exc}",
                  flush=True)
    return found, missing


# -- running systems and the load generator -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


@dataclass
class System:
    label: str
    argv: list[str]
    health: str
    path: str
    body: bytes
    header_length: int | None = None
    unpinned: bool = False  # may use every core (worker processes scaling with cores)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, logs: Path, cpu: int | None, timeout: float = 300.0) -> None:
        self.log = logs / (re.sub(r"\W+", "-", self.label) + ".log")
        env = {**os.environ, "GLOG_minloglevel": "3", "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(pinned(cpu, self.argv), stdout=out,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, cwd=ROOT)
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + self.health, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.label} not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the group this script started
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def check(self, expected: np.ndarray) -> None:
        """One request, answer compared with the in-process output."""
        import httpx

        headers = {"Content-Type": "application/json"}
        if self.header_length is not None:
            headers = {"Content-Type": "application/octet-stream",
                       "Inference-Header-Content-Length": str(self.header_length)}
        response = httpx.post(self.url + self.path, content=self.body, headers=headers,
                              timeout=120)
        response.raise_for_status()
        length = response.headers.get("inference-header-content-length")
        if length is not None:
            got = np.frombuffer(response.content[int(length):], dtype="<f4")
        else:
            got = np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32)
        np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-3, atol=1e-4)


@dataclass
class Result:
    model: str
    system: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def wrk_script(workdir: Path, system: System) -> Path:
    body = workdir / (re.sub(r"\W+", "-", system.label) + ".body")
    body.write_bytes(system.body)
    lines = [
        f'local f = assert(io.open("{body}", "rb"))',
        "wrk.body = f:read(\"*all\")",
        "f:close()",
        'wrk.method = "POST"',
    ]
    if system.header_length is None:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    else:
        lines.append('wrk.headers["Content-Type"] = "application/octet-stream"')
        lines.append(f'wrk.headers["Inference-Header-Content-Length"] = "{system.header_length}"')
    script = body.with_suffix(".lua")
    script.write_text("\n".join(lines) + "\n")
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def run_wrk(url: str, script: Path, concurrency: int, seconds: float, cpu: int | None
            ) -> tuple[float, float, float, int]:
    argv = pinned(cpu, ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "60s",
                        "--latency", "-s", str(script), url])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(n) for n in sock.groups())
    return rps, p50, p99, errors


def in_process(repo: str, case: ModelCase, x: np.ndarray, concurrencies: list[int],
               seconds: float, cpu_threads: int,
               label: str = "in-process") -> tuple[list[Result], np.ndarray]:
    """Threads calling hub.predict: the predictor's limit without HTTP."""
    from workbench import ModelRepository, VersionHub

    hub = VersionHub(ModelRepository(repo), case.name, device="cpu", workers=1,
                     cpu_threads=cpu_threads)
    results = []
    try:
        loaded = hub.load("1.0.0")
        out = loaded.outputs[0].name
        expected = hub.predict({case.input: x}).outputs[out]
        for concurrency in concurrencies:
            latencies: list[float] = []
            lock = threading.Lock()
            stop = threading.Event()

            def client(stop: threading.Event = stop, lock: threading.Lock = lock,
                       latencies: list[float] = latencies) -> None:
                mine = []
                while not stop.is_set():
                    started = time.perf_counter()
                    hub.predict({case.input: x})
                    mine.append(time.perf_counter() - started)
                with lock:
                    latencies.extend(mine)

            threads = [threading.Thread(target=client) for _ in range(concurrency)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            time.sleep(seconds)
            stop.set()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            ms = np.asarray(latencies) * 1000
            results.append(Result(case.name, label, concurrency, len(ms) / elapsed,
                                  float(np.percentile(ms, 50)), float(np.percentile(ms, 99))))
    finally:
        hub.close()
    return results, expected


def run_inproc(args: argparse.Namespace) -> None:
    """Subprocess mode: measure in-process, print the results and the expected output."""
    case = CASES[args.model]
    levels = [int(c) for c in args.concurrency.split(",")]
    results, expected = in_process(args.repo, case, case.sample(), levels, args.seconds,
                                   args.cpu_threads, args.label)
    np.save(args.expected, expected)
    print("RESULTS " + json.dumps([r.__dict__ for r in results]), flush=True)


def in_fresh_process(args: argparse.Namespace, case: ModelCase, concurrencies: list[int],
                     cpu: int | None, workdir: Path, label: str) -> tuple[list[Result],
                                                                          np.ndarray]:
    """The in-process limit, measured in a fresh process pinned like the servers."""
    expected_path = workdir / f"{case.name}-expected.npy"
    argv = pinned(cpu, [PY, str(Path(__file__).resolve()), "inproc", "--repo", args.repo,
                        "--model", case.name, "--cpu-threads", str(args.cpu_threads),
                        "--seconds", str(args.seconds), "--label", label,
                        "--concurrency", ",".join(map(str, concurrencies)),
                        "--expected", str(expected_path)])
    env = {**os.environ, "GLOG_minloglevel": "3"}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True,
                         timeout=len(concurrencies) * args.seconds + 600).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULTS "))
    results = [Result(**r) for r in json.loads(line.removeprefix("RESULTS "))]
    for result in results:
        print(f"  {result}", flush=True)
    return results, np.load(expected_path)


def peer_systems(case: ModelCase, x: np.ndarray, repo: str, cpu_threads: int,
                 pythons: dict[str, Path], workdir: Path) -> list[System]:
    """MLServer x1|x2 (JSON: no binary tensors on its REST API) and KServe x1|x2 (binary)."""
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(PEERS_PY.parent)])}
    infer = f"/v2/models/{case.name}/infer"
    ready = f"/v2/models/{case.name}/ready"
    common = ["--repo", repo, "--model", case.name, "--cpu-threads", str(cpu_threads)]
    systems = []
    if "mlserver" in pythons:
        for workers in (1, 2):
            home = workdir / f"mlserver-{case.name}-x{workers}"
            argv = [str(pythons["mlserver"]), str(PEERS_PY), "mlserver", *common,
                    "--workers", str(workers), "--workdir", str(home),
                    "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
            systems.append(System(f"mlserver x{workers} json", argv, ready, infer,
                                  json_body(case, x), unpinned=workers > 1, env=env))
    if "kserve" in pythons:
        bbody, length = binary_body(case, x)
        for workers in (1, 2):
            argv = [str(pythons["kserve"]), str(PEERS_PY), "kserve", *common,
                    "--workers", str(workers)]
            systems.append(System(f"kserve x{workers} bin", argv, ready, infer, bbody, length,
                                  unpinned=workers > 1, env=env))
    return systems


def systems_for(case: ModelCase, x: np.ndarray, repo: str, cpu_threads: int,
                max_batch: int) -> list[System]:
    serve = [PY, "-m", "workbench", "serve", "--repo", repo, "--model", case.name,
             "--version", "1.0.0", "--cpu-threads", str(cpu_threads),
             "--no-access-log", "--log-level", "warning"]
    workbench = [*serve, "--isolation", "thread", "--workers", "1"]
    process = [*serve, "--isolation", "process"]
    batching = ["--max-batch-size", str(max_batch)]
    infer = f"/v2/models/{case.name}/infer"
    jbody = json_body(case, x)
    bbody, length = binary_body(case, x)
    here = str(Path(__file__).resolve())
    common = ["--repo", repo, "--model", case.name, "--cpu-threads", str(cpu_threads)]
    return [
        System("workbench batch bin", [*workbench, *batching], "/v2/health/ready", infer,
               bbody, length),
        System("workbench batch json", [*workbench, *batching], "/v2/health/ready", infer,
               jbody),
        System("workbench nobatch json", [*workbench, "--no-batching"], "/v2/health/ready",
               infer, jbody),
        System("workbench process x1 bin", [*process, "--workers", "1", *batching],
               "/v2/health/ready", infer, bbody, length),
        System("workbench process x2 bin", [*process, "--workers", "2", *batching],
               "/v2/health/ready", infer, bbody, length, unpinned=True),
        System("naive fastapi", [PY, here, "naive", *common], "/health", "/predict", jbody),
        System("litserve", [PY, here, "litserve", *common], "/health", "/predict", jbody),
    ]


@dataclass(frozen=True)
class Failure:
    model: str
    system: str
    reason: str


def bench_model(args: argparse.Namespace, case: ModelCase, concurrencies: list[int],
                workdir: Path, pythons: dict[str, Path]
                ) -> tuple[list[Result], list[Failure]]:
    cpu_sut, cpu_gen = (None, None) if args.no_pin else (0, 1)
    x = case.sample()
    print(f"\n== {case.name}: in-process", flush=True)
    results, expected = in_fresh_process(args, case, concurrencies, cpu_sut, workdir,
                                         "in-process")
    failures = []
    systems = [*systems_for(case, x, args.repo, args.cpu_threads, args.max_batch_size),
               *peer_systems(case, x, args.repo, args.cpu_threads, pythons, workdir)]
    for system in selected(systems, args.only):
        print(f"== {case.name}: {system.label}", flush=True)
        system.port = free_port()
        system.argv += ["--port", str(system.port)]
        started = time.monotonic()
        try:
            system.start(workdir, None if system.unpinned else cpu_sut)
            print(f"  ready in {time.monotonic() - started:.1f} s", flush=True)
            system.check(expected)
            script = wrk_script(workdir, system)
            run_wrk(system.url + system.path, script, max(concurrencies), 1.0, cpu_gen)  # warm
            for concurrency in concurrencies:
                rps, p50, p99, errors = run_wrk(system.url + system.path, script, concurrency,
                                                args.seconds, cpu_gen)
                results.append(Result(case.name, system.label, concurrency, rps, p50, p99,
                                      errors))
                print(f"  {results[-1]}", flush=True)
        except Exception as exc:  # reported with the results, and the run goes on
            reason = one_line(f"{type(exc).__name__}: {exc}")
            failures.append(Failure(case.name, system.label, reason))
            print(f"  FAILED: {reason} (log: {system.log})", flush=True)
        finally:
            system.stop()
    # The limit once more, after the servers: on a shared machine the load drifts, and
    # the ratios use the better of the two in-process runs.
    print(f"== {case.name}: in-process, again", flush=True)
    again, _ = in_fresh_process(args, case, concurrencies, cpu_sut, workdir,
                                "in-process (again)")
    return results + again, failures


def one_line(text: str, limit: int = 600) -> str:
    """``text`` on one line; when long, its start and its end (where a traceback ends)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit // 3]} ... {text[-2 * limit // 3:]}"


def selected(systems: list[System], only: str | None) -> list[System]:
    """The systems whose label contains one of the comma-separated ``only`` words (all if none)."""
    if not only:
        return systems
    words = [word.strip() for word in only.split(",") if word.strip()]
    return [system for system in systems if any(word in system.label for word in words)]


# -- report -------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    lines = ["| model | system | concurrency | req/s | p50 ms | p99 ms | errors |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.model} | {r.system} | {r.concurrency} | {r.rps:.1f} | "
                     f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |")
    return "\n".join(lines)


LIMIT = "in-process (limit, better of two runs)"
OURS = ("workbench process x1 bin", "workbench process x2 bin")
PEER_PREFIXES = ("mlserver", "kserve")


def best_rps(results: list[Result]) -> dict[tuple[str, str, int], float]:
    """req/s by (model, system, concurrency); the two in-process runs merged into the limit."""
    best: dict[tuple[str, str, int], float] = {}
    for r in results:
        system = LIMIT if r.system.startswith("in-process") else r.system
        key = (r.model, system, r.concurrency)
        best[key] = max(best.get(key, 0.0), r.rps)
    return best


def _fmt_rps(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def pivot(results: list[Result]) -> str:
    """req/s with one column per concurrency, the in-process limit first: the README's table."""
    best = best_rps(results)
    levels = sorted({c for _, _, c in best})
    lines = ["| model | system | " + " | ".join(f"c={c}" for c in levels) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in levels) + " |"]
    rows: dict[tuple[str, str], None] = {}
    for model in dict.fromkeys(r.model for r in results):
        if any(m == model and s == LIMIT for m, s, _ in best):
            rows[(model, LIMIT)] = None
        for m, system, _ in best:
            if m == model:
                rows[(model, system)] = None
    for model, system in rows:
        cells = [_fmt_rps(best[(model, system, c)]) if (model, system, c) in best else ""
                 for c in levels]
        lines.append(f"| {model} | {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def peer_ratios(results: list[Result]) -> str:
    """Workbench process x1 and x2 against every peer row at every concurrency, and a verdict."""
    best = best_rps(results)
    levels = sorted({c for _, _, c in best})
    lines = ["| model | workbench ÷ peer | " + " | ".join(f"c={c}" for c in levels) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in levels) + " |"]
    behind = []
    compared = 0
    models = dict.fromkeys(r.model for r in results)
    for model in models:
        peers = dict.fromkeys(s for m, s, _ in best if m == model and s.startswith(PEER_PREFIXES))
        for ours in OURS:
            for peer in peers:
                cells = []
                for c in levels:
                    a, b = best.get((model, ours, c)), best.get((model, peer, c))
                    if not a or not b:
                        cells.append("")
                        continue
                    compared += 1
                    cells.append(f"{a / b:.2f}×")
                    if a <= b:
                        behind.append(f"{model} c={c}: {ours} {_fmt_rps(a)} ≤ {peer} "
                                      f"{_fmt_rps(b)} req/s")
                if any(cells):
                    lines.append(f"| {model} | {ours.removesuffix(' bin')} ÷ "
                                 f"{peer} | " + " | ".join(cells) + " |")
    if not compared:
        return "no peer rows to compare with"
    verdict = ("workbench process x1 and x2 are ahead of every peer row at every concurrency"
               if not behind else "workbench is not ahead everywhere:\n" +
               "\n".join(f"  - {line}" for line in behind))
    return "\n".join(lines) + "\n\n" + verdict


def ratios(results: list[Result]) -> str:
    lines = []
    for model in sorted({r.model for r in results}):
        best: dict[str, float] = {}
        for r in results:
            if r.model == model:
                best[r.system] = max(best.get(r.system, 0.0), r.rps)
        limit = max(best.get("in-process", 0.0), best.get("in-process (again)", 0.0))
        ours = max(best.get("workbench batch bin", 0.0), best.get("workbench batch json", 0.0))
        if ours and limit:
            lines.append(f"- {model}: best workbench (thread) {ours:.1f} req/s = "
                         f"{ours / limit:.2f} x in-process (best of both runs, {limit:.1f}); "
                         + "; ".join(f"{name} {value:.1f} ({ours / value:.2f} x)"
                                     for name, value in best.items()
                                     if name in ("naive fastapi", "litserve") and value))
        for workers in (1, 2):
            value = best.get(f"workbench process x{workers} bin", 0.0)
            if value and limit:
                lines.append(f"- {model}: workbench process x{workers} {value:.1f} req/s = "
                             f"{value / limit:.2f} x the one-core in-process limit")
        one, two = best.get(OURS[0], 0.0), best.get(OURS[1], 0.0)
        if one and two:
            lines.append(f"- {model}: workbench process x2 = {two / one:.2f} x process x1")
    return "\n".join(lines)


def report(results: list[Result], failures: list[Failure], command: str, pinned: bool) -> str:
    parts = [f"command: `{command}`; {os.cpu_count()} CPUs, SUT pinned to CPU 0 (x2 rows "
             f"unpinned) and wrk to CPU 1: {pinned}",
             "Requests/s (best of the runs at each concurrency for the in-process limit):",
             pivot(results),
             "Workbench in worker processes against MLServer 1.7 and KServe 0.21 (req/s ratio):",
             peer_ratios(results),
             "Ratios:", ratios(results),
             "Every run:", table(results)]
    if failures:
        parts.append("FAILED (no figures):\n" + "\n".join(
            f"- {f.model} / {f.system}: {f.reason}" for f in failures))
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    for mode in ("naive", "litserve", "inproc"):
        app = sub.add_parser(mode)
        app.add_argument("--repo", required=True)
        app.add_argument("--model", required=True)
        app.add_argument("--port", type=int)
        app.add_argument("--cpu-threads", type=int, default=1)
        app.add_argument("--seconds", type=float, default=8.0)
        app.add_argument("--concurrency", default="1")
        app.add_argument("--label", default="in-process")
        app.add_argument("--expected", default="expected.npy")
    parser.add_argument("--repo", help="model repository with digits and resnet "
                        "(default: build the demo models in a temporary directory)")
    parser.add_argument("--models", default="digits,resnet")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--digits-concurrency", default="1,16,64")
    parser.add_argument("--resnet-concurrency", default="1,4")
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--only", help="run only the systems whose label contains one of these "
                        "comma-separated words (the in-process limit always runs)")
    parser.add_argument("--no-peers", action="store_true", help="skip MLServer and KServe")
    parser.add_argument("--peers-cache", type=Path,
                        default=Path.home() / ".cache" / "workbench-bench",
                        help="where the peers' virtual environments are made and kept")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    args = parser.parse_args()
    if args.mode == "naive":
        return run_naive(args)
    if args.mode == "litserve":
        return run_litserve(args)
    if args.mode == "inproc":
        return run_inproc(args)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    started = time.monotonic()
    pythons: dict[str, Path] = {}
    failures: list[Failure] = []
    if not args.no_peers:
        pythons, missing = peer_pythons(args.peers_cache)
        failures += [Failure("all", name, f"not installed: {reason}")
                     for name, reason in missing.items()]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        if args.repo is None:
            from workbench.model.demo import build_demo_repository

            args.repo = str(workdir / "repo")
            print("building the demo models ...", flush=True)
            build_demo_repository(args.repo)
        results: list[Result] = []
        for name in args.models.split(","):
            levels = [int(c) for c in getattr(args, f"{name}_concurrency").split(",")]
            measured, failed = bench_model(args, CASES[name], levels, workdir, pythons)
            results += measured
            failures += failed
    command = "uv run python bench/bench_serving.py " + " ".join(sys.argv[1:])
    text = report(results, failures, command, not args.no_pin)
    print("\n" + text + f"\n(whole run: {time.monotonic() - started:.0f} s)")
    if args.out:
        args.out.write_text(text)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
