"""Fixtures for deployment tests: a stub serving instance, a stub repository, managers.

The stub speaks the part of the serving HTTP contract the deploy layer uses (health,
deep health, metadata, infer, metrics, SIGTERM drain) with the standard library only,
so it starts in a few milliseconds; tests of the rollout machinery run against it with
real processes and real nginx. Tests marked for the real thing use ``workbench serve``
on the demo repository.

The stub's behaviour depends on the version it serves (see ``MODES``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests._components import require

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from workbench.deploy.manager import DeploymentManager

STUB_MODEL = "stub"
#: version -> behaviour of the stub serving it
MODES = {
    "1.0.0": "ok",
    "1.1.0": "ok",  # agrees with 1.0.0
    "1.2.0": "disagree",  # answers, but its top-1 differs from 1.0.0
    "1.3.0": "noready",  # runs, never ready
    "1.4.0": "crash",  # exits about a second after start
    "1.5.0": "deepfail",  # ready, but the deep health check fails
}

STUB_SERVER = r'''
"""A stub `workbench serve`: stdlib only, behaviour chosen by the version."""
import json, math, os, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = json.loads(os.environ.get("WB_STUB_MODES", "{}"))
args = sys.argv[1:]
assert args[0] == "serve", args
opts = {}
i = 1
while i < len(args):
    if args[i].startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
        opts[args[i][2:]] = args[i + 1]; i += 2
    else:
        opts[args[i][2:]] = True; i += 1
MODEL, VERSION = opts["model"], opts["version"]
MODE = MODES.get(VERSION, "ok")
DELAY = float(os.environ.get("WB_STUB_DELAY", "0"))
print(f"stub serving {MODEL} {VERSION} ({MODE}) on {opts['host']}:{opts['port']}", flush=True)
if MODE == "crash":
    time.sleep(1.0)
    print("stub: crashing as told", flush=True)
    sys.exit(3)
time.sleep(DELAY)
REQUESTS = {"ok": 0}

def outputs(x, rows, cols):
    out = []
    for r in range(rows):
        row = x[r * cols:(r + 1) * cols][:10]
        row = row + [0.0] * (10 - len(row))
        if MODE == "disagree":
            row = row[::-1]
        m = max(row)
        e = [math.exp(v - m) for v in row]
        s = sum(e)
        out.extend(v / s for v in e)
    return out

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def send(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.send_header("x-model-version", VERSION)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        p = self.path
        if p == "/v2/health/live":
            return self.send(200, {"live": True})
        if p in ("/v2/health/ready", f"/v2/models/{MODEL}/ready"):
            if MODE == "noready":
                return self.send(503, {"error": "stub never gets ready"})
            return self.send(200, {"ready": True})
        if p == "/v2/health/deep":
            if MODE == "deepfail":
                return self.send(503, {"ok": False, "error": "stub deep check fails"})
            return self.send(200, {"ok": True, "model": MODEL, "version": VERSION, "seconds": 0.001})
        if p == "/v2":
            return self.send(200, {"name": "stub", "version": "0", "extensions": []})
        if p.startswith(f"/v2/models/{MODEL}"):
            return self.send(200, {"name": MODEL, "versions": [VERSION], "platform": "stub",
                                   "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
                                   "outputs": [{"name": "probabilities", "datatype": "FP32",
                                                "shape": [-1, 10]}]})
        if p == "/metrics":
            text = (f'workbench_requests_total{{model="{MODEL}",version="{VERSION}",outcome="ok"}} '
                    f'{REQUESTS["ok"]}\n')
            return self.send(200, text.encode(), "text/plain; version=0.0.4")
        return self.send(404, {"error": f"no route {p}"})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.startswith(f"/v2/models/{MODEL}") or not self.path.endswith("/infer"):
            return self.send(404, {"error": f"no route {self.path}"})
        try:
            x = body["inputs"][0]
            rows, cols = x["shape"][0], x["shape"][1]
            data = outputs([float(v) for v in x["data"]], rows, cols)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return self.send(400, {"error": f"bad request: {exc}"})
        REQUESTS["ok"] += 1
        self.send(200, {"model_name": MODEL, "model_version": VERSION, "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [rows, 10], "data": data}]})

server = ThreadingHTTPServer((opts["host"], int(opts["port"])), Handler)
server.daemon_threads = True

def stop(*_):
    threading.Thread(target=server.shutdown, daemon=True).start()

signal.signal(signal.SIGTERM, stop)
server.serve_forever(poll_interval=0.05)
server.server_close()
print("stub: stopped", flush=True)
'''


def nginx_available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


@pytest.fixture
def nginx() -> None:
    """Skip (fail under CI=true) unless nginx is installed."""
    require("nginx", nginx_available(), "install nginx (e.g. apt-get install nginx-light)")


@pytest.fixture(scope="session")
def stub_command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The program prefix that runs the stub instead of ``python -m workbench``."""
    path = tmp_path_factory.mktemp("stub") / "stub_serve.py"
    path.write_text(STUB_SERVER, encoding="utf-8")
    return [sys.executable, str(path)]


def stub_sample(rows: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 64)).astype(np.float32)


@pytest.fixture(scope="session")
def stub_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with model ``stub`` (versions of MODES), dummy files, real manifests."""
    from workbench.model.manifest import TensorSpec
    from workbench.model.repository import ModelRepository

    root = tmp_path_factory.mktemp("stub-repo")
    source = tmp_path_factory.mktemp("stub-files")
    (source / "inference.json").write_text("{}", encoding="utf-8")
    (source / "inference.pdiparams").write_bytes(b"\0" * 16)
    repo = ModelRepository(root)
    for version in MODES:
        repo.publish(
            STUB_MODEL,
            version,
            source,
            sample={"x": stub_sample(200)},
            inputs=[TensorSpec("x", "float32", (-1, 64))],
            outputs=[TensorSpec("probabilities", "float32", (-1, 10))],
            aliases=("stable",) if version == "1.0.0" else (),
        )
    return root


@pytest.fixture
def home() -> Iterator[Path]:
    """A short workbench home: the router's unix socket path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="wb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_manager(
    home: Path, stub_repo: Path, stub_command: list[str]
) -> Iterator[Callable[..., DeploymentManager]]:
    """Managers over one home in ``tmp_path`` whose process backend runs the stub.

    Every deployment left at the end of the test is deleted (router and instances).
    """
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.platforms.process.backend import ProcessBackend

    env = {"WB_STUB_MODES": json.dumps(MODES)}

    def factory(name: str, options: object) -> ProcessBackend:
        assert name == "process"
        return ProcessBackend(home, command=stub_command, env=env)

    def make(**kwargs: object) -> DeploymentManager:
        kwargs.setdefault("repo", stub_repo)
        return DeploymentManager(home, backend_factory=factory, **kwargs)  # type: ignore[arg-type]

    yield make
    cleanup = make()
    for name in cleanup.names():
        try:
            cleanup.delete(name)
        except Exception as exc:  # keep cleaning up the others
            print(f"cleanup of {name} failed: {exc}", file=sys.stderr)
