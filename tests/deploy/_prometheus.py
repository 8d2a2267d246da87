"""A real Prometheus for tests: own config, short scrape interval, temporary storage.

``PrometheusServer(tmp_path, {"blue": [url], "green": [url]}, deployment="web")``
scrapes each instance's ``/metrics`` every 0.5 s, labelling the series with
``deployment`` and ``color``; ``stop()`` ends it. Tests call :func:`require_prometheus`
first (skip without it, fail under ``CI=true``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tests._components import require
from tests._wait import wait_until
from tests.deploy._nginx import free_port

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

SCRAPE_INTERVAL = 0.5


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )


def require_prometheus() -> None:
    require("prometheus", prometheus_binary() is not None,
            "install it with: apt-get install prometheus")


def selector(deployment: str, color: str) -> str:
    """The label matchers of one colour's series in this Prometheus."""
    return f'deployment="{deployment}",color="{color}"'


class PrometheusServer:
    """One Prometheus process on a free loopback port."""

    def __init__(self, workdir: Path, targets: Mapping[str, Sequence[str]], *,
                 deployment: str = "web") -> None:
        binary = prometheus_binary()
        assert binary is not None, "call require_prometheus() first"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.deployment = deployment
        workdir.mkdir(parents=True, exist_ok=True)
        jobs = []
        for color, urls in targets.items():
            hosts = ", ".join(f"'{url.split('://', 1)[1].rstrip('/')}'" for url in urls)
            jobs.append(
                f"  - job_name: '{deployment}-{color}'\n"
                f"    static_configs:\n"
                f"      - targets: [{hosts}]\n"
                f"        labels: {{deployment: '{deployment}', color: '{color}'}}\n"
            )
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {int(SCRAPE_INTERVAL * 1000)}ms\n"
            f"  evaluation_interval: {int(SCRAPE_INTERVAL * 1000)}ms\n"
            "scrape_configs:\n" + "".join(jobs),
            encoding="utf-8",
        )
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_until(self._ready, 60, 0.2, what=f"Prometheus on {self.url}",
                       ignore=(httpx.TransportError,))
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}:\n"
                                 + self.log_path.read_text(errors="replace"))
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def scrapes_done(self) -> float:
        """How many scrapes of all targets succeeded so far (``up`` samples, summed)."""
        doc = httpx.get(f"{self.url}/api/v1/query",
                        params={"query": "sum(count_over_time(up[1h]))"}, timeout=5).json()
        result = doc["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
