"""Bounded inference load through a router, recording which colour answered each request."""

from __future__ import annotations

import threading
import time

import httpx

from tests.serving.conftest import json_infer_body, x_batch

INFER = "/v2/models/digits/infer"


class Load:
    """``threads`` clients posting inferences to ``url`` until stopped.

    Bounded: at most ``max_requests`` requests and ``max_seconds``; with ``rate``, each
    client sends at most that many requests per second (else as fast as answered).
    """

    def __init__(self, url: str, *, threads: int = 4, rate: float | None = None,
                 max_requests: int = 20_000, max_seconds: float = 240.0) -> None:
        self.url = url
        self.body = json_infer_body(x_batch(2))
        self.pause = 0.0 if rate is None else 1.0 / rate
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.answers: list[tuple[float, int, str]] = []  # (time, status, answering colour)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.wait(self.pause) and time.monotonic() < self.deadline:
                with self.lock:
                    if len(self.answers) + len(self.errors) >= self.max_requests:
                        return
                try:
                    r = client.post(INFER, json=self.body)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    self.answers.append((time.monotonic(), r.status_code,
                                         r.headers.get("x-deploy-color", "")))
                    if r.status_code != 200:
                        self.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")

    def since(self, moment: float) -> list[tuple[float, int, str]]:
        with self.lock:
            return [a for a in self.answers if a[0] >= moment]
