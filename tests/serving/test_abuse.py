"""A directly exposed ``workbench serve`` under abuse: slow, idle, huge and abandoned
requests, floods of connections and of queued work, alias pinning at full speed."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests._wait import wait_until
from tests.serving.conftest import ServeProcess, binary_infer_body, json_infer_body, metric_value

MAX_CONNECTIONS = 40
BLOCKER = 64  # rows of the request that keeps resnet's one predictor busy (~1 s)


@pytest.fixture(scope="module")
def repo(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the demo's digits model (its aliases are changed here)."""
    root = tmp_path_factory.mktemp("abuse-repo")
    shutil.copytree(demo_repo / "digits", root / "digits")
    return root


@pytest.fixture(scope="module")
def server(serve: Any, repo: Path) -> ServeProcess:
    """digits 1.0.0 active, 1.1.0 loaded; short timeouts and a small connection limit."""
    return serve([
        "--repo", str(repo), "--model", "digits", "--version", "1.0.0", "--load", "1.1.0",
        "--max-body-mb", "64", "--header-timeout", "1", "--body-timeout", "1",
        "--keep-alive-timeout", "1", "--max-connections", str(MAX_CONNECTIONS),
        "--no-access-log",
    ])


@pytest.fixture(scope="module")
def resnet(serve: Any, demo_repo: Path) -> ServeProcess:
    """The compute-bound model on one predictor, with a queue of at most 4 requests."""
    return serve(["--repo", str(demo_repo), "--model", "resnet", "--workers", "1",
                  "--max-batch-size", str(BLOCKER), "--max-queue", "4", "--no-access-log"])


def connect(server: ServeProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)  # raises TimeoutError if the server never closes
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def server_errors(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("workbench_requests_total{") and 'outcome="server_error"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- connections ------------------------------------------------------------------------


def test_idle_connection_is_closed(server: ServeProcess) -> None:
    with connect(server) as sock:
        data, seconds = read_until_closed(sock, timeout=15)
    assert data == b"" and seconds < 10


def test_slowloris_headers_get_408(server: ServeProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n")
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.2):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    return

        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            data, seconds = read_until_closed(sock, timeout=15)
        finally:
            stop.set()
            thread.join()
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b"headers did not arrive" in data and seconds < 10


def test_stalled_body_gets_408_and_is_no_server_error(server: ServeProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                     b'{"inputs": ')
        data, seconds = read_until_closed(sock, timeout=15)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b"body stalled" in data and seconds < 10
    with server.client() as client:
        assert server_errors(client.get("/metrics").text) == 0


def test_oversized_headers_get_431(server: ServeProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # up to 4 MiB; the server stops reading long before
                sock.sendall(b"a" * 65536)
        except OSError:
            pass  # closed on us: the answer is already in the socket's buffer
        data, _ = read_until_closed(sock, timeout=15)
    assert data.startswith(b"HTTP/1.1 431"), data[:200]
    with server.client() as client:
        assert client.get("/v2/health/live").status_code == 200


def test_connections_beyond_the_limit_are_refused_and_the_server_recovers(
    server: ServeProcess,
) -> None:
    socks = [connect(server) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        refused = 0
        for sock in socks[-10:]:
            data, _ = read_until_closed(sock, timeout=15)
            refused += data.startswith(b"HTTP/1.1 503")
        assert refused == 10
    finally:
        for sock in socks:
            sock.close()
    with server.client() as client:
        wait_until(lambda: client.get("/v2/health/live").status_code == 200, 15,
                   what="the server answering again", ignore=(httpx.TransportError,))


def test_kept_alive_connection_is_closed_when_idle(server: ServeProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        data, seconds = read_until_closed(sock, timeout=15)
    assert data.startswith(b"HTTP/1.1 200") and seconds < 10


# -- bodies -----------------------------------------------------------------------------


def test_large_bodies_do_not_stall_the_event_loop(server: ServeProcess) -> None:
    """Eight 50 MB JSON bodies at once: liveness keeps answering while they are decoded
    (inline, each stalled the event loop for a quarter of a second)."""
    x = np.random.default_rng(0).random((40_000, 64), dtype=np.float32)
    body = orjson.dumps({"inputs": [{"name": "nope", "datatype": "FP32",
                                     "shape": list(x.shape), "data": x.tolist()}]})
    assert len(body) > 45e6
    statuses: list[int] = []

    def post() -> None:
        with server.client() as client:
            statuses.append(client.post("/v2/models/digits/infer", content=body).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    latencies = []
    with server.client() as client:
        while any(thread.is_alive() for thread in threads):
            started = time.monotonic()
            assert client.get("/v2/health/live").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.01)
    assert statuses == [400] * 8  # decoded in full, then refused: no input "nope"
    # decoded inline, every body stalled one check by ~0.25 s (eight of them); off the loop
    # a check waits at most for a busy CPU (~0.1 s on two cores decoding 8 bodies)
    slow = [round(t, 3) for t in latencies if t > 0.2]
    assert len(slow) <= 2, slow


def test_nesting_and_dimensions_beyond_limits_are_client_errors(server: ServeProcess) -> None:
    deep = (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": '
            + b"[" * 1100 + b"1" + b"]" * 1100 + b"}]}")
    dims = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * 65, "data": [1]}]}
    with server.client() as client:
        before = server_errors(client.get("/metrics").text)
        response = client.post("/v2/models/digits/infer", content=deep)
        assert response.status_code == 400 and "nested deeper" in response.json()["error"]
        response = client.post("/v2/models/digits/infer", json=dims)
        assert response.status_code == 400 and "65 dimensions" in response.json()["error"]
        text = client.get("/metrics").text
    assert server_errors(text) == before
    assert metric_value(text, "workbench_requests_total", version="",
                        outcome="client_error") >= 2


# -- queue ------------------------------------------------------------------------------


def images(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).random((rows, 3, 224, 224), dtype=np.float32)


def rows_computed(server: ServeProcess) -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("workbench_batch_size_sum{"))


def test_abandoned_requests_are_not_computed(resnet: ServeProcess) -> None:
    """While a big batch computes, four clients send a request, wait until it is queued and
    hang up: none of the four is computed, and the next real request is answered."""
    body, headers = binary_infer_body({"image": images(1)})
    raw = (b"POST /v2/models/resnet/infer HTTP/1.1\r\nHost: x\r\n"
           + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    start = rows_computed(resnet)
    big, big_headers = binary_infer_body({"image": images(BLOCKER)})
    with ThreadPoolExecutor(1) as pool, resnet.client() as client:
        blocker = pool.submit(client.post, "/v2/models/resnet/infer", content=big,
                              headers=big_headers)
        time.sleep(0.2)  # the big batch is computing
        socks = [connect(resnet) for _ in range(4)]
        for sock in socks:
            sock.sendall(raw)
        time.sleep(0.2)  # read and queued behind the big batch
        for sock in socks:
            sock.close()
        assert blocker.result().status_code == 200
    real = httpx.post(f"{resnet.url}/v2/models/resnet/infer", content=body, headers=headers,
                      timeout=60)
    assert real.status_code == 200
    assert rows_computed(resnet) - start == BLOCKER + 1


def test_a_full_queue_answers_503_with_retry_after(resnet: ServeProcess) -> None:
    body, headers = binary_infer_body({"image": images(1)})
    big, big_headers = binary_infer_body({"image": images(BLOCKER)})

    def post(content: bytes, extra: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{resnet.url}/v2/models/resnet/infer", content=content,
                          headers=extra, timeout=120)

    with ThreadPoolExecutor(12) as pool:
        blocker = pool.submit(post, big, big_headers)
        time.sleep(0.2)
        small = [pool.submit(post, body, headers) for _ in range(10)]
        answers = [future.result() for future in small]
        assert blocker.result().status_code == 200
    refused = [r for r in answers if r.status_code == 503]
    assert refused, [r.status_code for r in answers]
    assert all(r.status_code == 200 for r in answers if r not in refused)
    assert refused[0].headers["retry-after"] == "1"
    assert "queue is full" in refused[0].json()["error"]


# -- aliases ----------------------------------------------------------------------------


def read_syscalls(server: ServeProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError("no syscr in /proc/PID/io")


def test_alias_pinning_does_not_read_the_repository_per_request(server: ServeProcess) -> None:
    body = json_infer_body(np.zeros((1, 64), dtype=np.float32))

    def reads(headers: dict[str, str]) -> int:
        with server.client() as client:
            client.post("/v2/models/digits/infer", json=body, headers=headers)
            before = read_syscalls(server)
            for _ in range(200):
                assert client.post("/v2/models/digits/infer", json=body,
                                   headers=headers).status_code == 200
            return read_syscalls(server) - before

    by_version = reads({"x-model-version": "1.1.0"})
    by_alias = reads({"x-model-version": "canary"})
    assert by_alias - by_version < 100, (by_alias, by_version)


def test_a_changed_alias_is_followed_within_seconds(server: ServeProcess, repo: Path) -> None:
    from workbench import ModelRepository

    repository = ModelRepository(repo)
    body = json_infer_body(np.zeros((1, 64), dtype=np.float32))
    pinned = {"x-model-version": "canary"}

    def served_by() -> str:
        with server.client() as client:
            response = client.post("/v2/models/digits/infer", json=body, headers=pinned)
            assert response.status_code == 200, response.text
            return response.headers["x-model-version"]

    assert served_by() == "1.1.0"
    repository.set_alias("digits", "canary", "1.0.0")
    try:
        wait_until(lambda: served_by() == "1.0.0", 10, 0.1, what="canary to follow the alias")
    finally:
        repository.set_alias("digits", "canary", "1.1.0")
    wait_until(lambda: served_by() == "1.1.0", 10, 0.1, what="canary to come back")
