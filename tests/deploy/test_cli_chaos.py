"""Chaos testing from the command line: ``deploy update --fault-error-rate R
--fault-latency-ms L`` injects faults into the candidate's instances only.

Real nginx, real ``workbench serve`` instances of the demo digits model, started by
``workbench deploy`` as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

from tests.deploy.test_cli_deploy import env, run  # noqa: F401 - the stub CLI's env fixture
from tests.serving.conftest import json_infer_body

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.nginx
INFER = "/v2/models/digits/infer"


def workbench(env: dict[str, str], *args: str,  # noqa: F811
              timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def answers(url: str, n: int) -> tuple[int, list[float]]:
    """Server errors among ``n`` inference requests to ``url``, and each request's seconds."""
    body = json_infer_body(np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32))
    errors, seconds = 0, []
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        for _ in range(n):
            began = time.perf_counter()
            response = client.post(INFER, json=body)
            seconds.append(time.perf_counter() - began)
            assert response.status_code in (200, 500), response.text
            errors += response.status_code == 500
    return errors, seconds


@pytest.mark.slow
def test_faults_reach_the_candidate_only(nginx: None, demo_repo: Path, home: Path) -> None:
    cli_env = {"WORKBENCH_HOME": str(home), "WORKBENCH_REPO": str(demo_repo), "COLUMNS": "200"}
    try:
        made = workbench(cli_env, "deploy", "create", "web", "--model", "digits", "--version",
                         "1.0.0")
        assert made.returncode == 0, made.stderr
        updated = workbench(cli_env, "deploy", "update", "web", "--version", "1.1.0",
                            "--fault-error-rate", "0.3",
                            "--fault-latency-ms", "40")
        assert updated.returncode == 0, updated.stderr
        status = json.loads(workbench(cli_env, "deploy", "status", "web", "--json").stdout)
        urls = {i["color"]: i["url"] for i in status["instances"]}
        stable_errors, _ = answers(urls["blue"], 200)
        candidate_errors, candidate_seconds = answers(urls["green"], 200)
    finally:
        workbench(cli_env, "deploy", "delete", "web", "--yes", timeout=120)
    assert stable_errors == 0
    # 30% of 200: 60 expected, 35..85 is more than 3.5 standard deviations either side
    assert 35 <= candidate_errors <= 85, candidate_errors
    assert min(candidate_seconds) >= 0.040


@pytest.mark.parametrize(("flag", "value", "said"), [
    ("--fault-error-rate", "1.5", "--fault-error-rate must be in 0..1, not 1.5"),
    ("--fault-error-rate", "-0.1", "--fault-error-rate must be in 0..1, not -0.1"),
    ("--fault-latency-ms", "-5", "--fault-latency-ms must be in 0..600000, not -5"),
    ("--fault-segment", "x-tenant=b",
     "--fault-segment limits faults: give --fault-error-rate or --fault-latency-ms too"),
])
def test_a_fault_out_of_range_is_one_sentence_and_starts_nothing(
    nginx: None, env: dict[str, str], flag: str, value: str, said: str  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    before = json.loads(run(env, "status", "web", "--json"))
    proc = workbench(env, "deploy", "update", "web", "--version", "1.1.0", f"{flag}={value}",
                     timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: {said}", proc.stderr
    after = json.loads(run(env, "status", "web", "--json"))
    assert after["phase"] == "stable" and after["revision"] == before["revision"]
    assert [i["color"] for i in after["instances"]] == ["blue"]
