"""The ``workbench serve`` options of a deployment's instances, as they run and as ``deploy
restore`` starts them again: per-segment counting (``--segment-by``) on any colour, chaos
faults (``--fault-error-rate`` …) on the candidate only. Real processes (the stub server)
behind real nginx; each instance's options read from its command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
import tomllib

from tests._wait import wait_until
from tests.deploy.test_cli_deploy import env, run  # noqa: F401 - the stub CLI's env fixture
from workbench.deploy.canary import check_segments
from workbench.deploy.rollout.analysis import AnalysisSpec
from workbench.deploy.rollout.phases import Phase
from workbench.deploy.state import DeploymentState, StateStore
from workbench.serving.faults import FaultConfig

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench._types import Color
    from workbench.deploy.deployment import Deployment
    from workbench.deploy.manager import DeploymentManager

pytestmark = pytest.mark.nginx
COUNTING = ("--segment-by", "header:x-tenant", "--max-segments", "4")


def argv(web: Deployment, color: Color) -> list[str]:
    """The command line ``color``'s instance runs with."""
    return list(psutil.Process(int(web.state.instances[color].ref)).cmdline())


def counts(args: list[str]) -> bool:
    return "--segment-by" in args and args[args.index("--segment-by") + 1] == "header:x-tenant"


def kill(web: Deployment, color: Color) -> None:
    """SIGKILL ``color``'s instance and its children (its own session), as a reboot would,
    and wait until they are gone."""
    pid = int(web.state.instances[color].ref)
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    os.killpg(os.getpgid(pid), signal.SIGKILL)

    def running(proc: psutil.Process) -> bool:
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def gone() -> bool:
        return not any(running(p) for p in procs)

    wait_until(gone, 10, 0.05, what=f"pid {pid} and its children gone")


def test_restore_starts_the_candidate_with_its_segments_and_faults_and_stable_without(
    nginx: None, make_manager: Callable[..., DeploymentManager],
) -> None:
    web = make_manager().create("web", "stub", "stable")
    web.update("1.1.0", faults=FaultConfig(0.3, 40.0), serve_args=COUNTING, checks=("ready",))
    web.weight(20)
    assert counts(argv(web, "green")) and "--fault-error-rate" in argv(web, "green")
    kill(web, "blue")
    kill(web, "green")
    state = web.restore(timeout=30)
    assert state.history[-1].reason == "restarted blue 1.0.0, green 1.1.0"
    candidate, stable = argv(web, "green"), argv(web, "blue")
    assert counts(candidate), candidate
    assert candidate[candidate.index("--fault-error-rate") + 1] == "0.3", candidate
    assert candidate[candidate.index("--fault-latency-ms") + 1] == "40", candidate
    assert not any(a.startswith(("--fault", "--segment")) for a in stable), stable
    # a second crash: the restored instance recorded its options again
    kill(web, "green")
    web.restore(timeout=30)
    assert counts(argv(web, "green")) and "--fault-error-rate" in argv(web, "green")


def test_a_deployment_created_counting_per_segment_keeps_counting_on_every_colour(
    nginx: None, make_manager: Callable[..., DeploymentManager],
) -> None:
    web = make_manager().create("web", "stub", "stable", serve_args=COUNTING)
    assert counts(argv(web, "blue"))
    web.update("1.1.0")  # a plain update: the candidate counts as stable does
    assert counts(argv(web, "green"))
    kill(web, "blue")
    web.restore(timeout=30)
    assert counts(argv(web, "blue"))


def test_faults_never_come_back_on_stable(
    nginx: None, make_manager: Callable[..., DeploymentManager],
) -> None:
    web = make_manager().create("web", "stub", "stable")
    web.update("1.1.0", faults=FaultConfig(0.3, 0.0), serve_args=COUNTING, checks=("ready",))
    web.promote()
    web.update("1.0.0")  # green (1.1.0, started with faults) is stable now
    assert web.state.rollout.stable == "green"
    # the next candidate counts per segment as stable does, and has no faults
    assert counts(argv(web, "blue")) and "--fault-error-rate" not in argv(web, "blue")
    kill(web, "green")
    web.restore(timeout=30)
    stable = argv(web, "green")
    assert counts(stable), stable
    assert not any(a.startswith("--fault") for a in stable), stable


SEGMENTED = """\
steps = [50, 100]
interval = "30s"
segment_by = "header:x-tenant"
memory = false
agreement = false
accuracy = false
"""


def test_a_canary_comparing_segments_with_a_stable_that_does_not_count_them_is_refused(
    nginx: None, env: dict[str, str], tmp_path: Path,  # noqa: F811
) -> None:
    analysis = tmp_path / "tenants.toml"
    analysis.write_text(SEGMENTED)
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    said = refused(env, "update", "web", "--version", "1.1.0", "--strategy", "canary",
                   "--analysis", str(analysis))
    assert ("latency_vs_stable compares each header:x-tenant segment with the same segment of "
            "stable, but stable (blue, stub 1.0.0) does not count requests per segment: start "
            "stable with it first (workbench deploy update web --version 1.0.0 --segment-by "
            "header:x-tenant --auto-promote), or set segment_by = false in the analysis' "
            "relative_latency table") in said, said
    status = json.loads(run(env, "status", "web", "--json"))
    assert status["phase"] == "stable" and [i["color"] for i in status["instances"]] == ["blue"]
    # what it says to do: a blue/green update of stable's version, counting, promoted
    run(env, "update", "web", "--version", "1.0.0", "--segment-by", "x-tenant", "--auto-promote")
    state = _load(env, "web")
    assert state.rollout.phase is Phase.PROMOTED and state.rollout.candidate == "green"
    assert all(counts(list(r.args)) for r in state.records("green"))
    check_segments(state, AnalysisSpec.from_dict(tomllib.loads(SEGMENTED)))  # passes now


def refused(env: dict[str, str], *args: str) -> str:  # noqa: F811
    """What ``workbench deploy ARGS`` says when it refuses (exit 2, one sentence)."""
    proc = subprocess.run([sys.executable, "-m", "workbench", "deploy", *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 6
    return " ".join(proc.stderr.split())


def _load(env: dict[str, str], name: str) -> DeploymentState:  # noqa: F811
    return StateStore(env["WORKBENCH_HOME"]).load(name)


def test_create_segment_by_starts_stable_counting_per_segment(
    nginx: None, env: dict[str, str],  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable",
        "--segment-by", "X-Tenant", "--max-segments", "8")
    (blue,) = _load(env, "web").records("blue")
    assert blue.args == ("--segment-by", "header:x-tenant", "--max-segments", "8")
    check_segments(_load(env, "web"), AnalysisSpec.from_dict(tomllib.loads(SEGMENTED)))
    said = refused(env, "create", "other", "--model", "stub", "--segment-by", "cookie:x")
    assert "segment_by: a segment is header:NAME or param:NAME, not 'cookie:x'" in said, said
    said = refused(env, "create", "other", "--model", "stub", "--max-segments", "8")
    assert "--max-segments bounds --segment-by: give --segment-by too" in said, said


@pytest.mark.slow
def test_a_restored_workbench_serve_candidate_counts_segments_and_fails_as_before(
    nginx: None, demo_repo: Path, home: Path,
) -> None:
    """The same with real ``workbench serve`` instances of the demo model: after a crash,
    the restored candidate counts tenant b's requests apart and still fails them all;
    stable answers every one."""
    import httpx
    import numpy as np

    from tests.serving.conftest import json_infer_body
    from workbench.deploy.manager import DeploymentManager

    web = DeploymentManager(home, repo=demo_repo).create("web", "digits", "1.0.0", timeout=120)
    try:
        web.update("1.1.0", faults=FaultConfig(1.0, 0.0), serve_args=COUNTING,
                   checks=("ready",), timeout=120)
        kill(web, "green")
        web.restore(timeout=120)
        urls = {color: group.url for color, group in web.state.instances.items()}
        body = json_infer_body(np.random.default_rng(0).random((1, 64), dtype=np.float32))
        status = {}
        with httpx.Client(timeout=30, trust_env=False) as client:
            for color, url in urls.items():
                status[color] = {client.post(f"{url}/v2/models/digits/infer", json=body,
                                             headers={"x-tenant": "b"}).status_code
                                 for _ in range(3)}
            metrics = client.get(f"{urls['green']}/metrics").text
    finally:
        web.delete()
    assert status == {"blue": {200}, "green": {500}}
    counted = [line for line in metrics.splitlines()
               if line.startswith("workbench_segment_requests_total{") and 'segment="b"' in line]
    assert counted and 'segment_by="header:x-tenant"' in counted[0], metrics[-2000:]


def test_create_isolation_runs_every_colour_in_the_instance_process(
    nginx: None, env: dict[str, str],  # noqa: F811
) -> None:
    """``--isolation thread`` (what an OCR pipeline on a small CPU wants) reaches blue's
    command line, is recorded, and a later candidate runs the same way."""
    run(env, "create", "web", "--model", "stub", "--version", "stable", "--isolation", "thread")
    (blue,) = _load(env, "web").records("blue")
    assert blue.args == ("--isolation", "thread")
    run(env, "update", "web", "--version", "1.1.0")
    (green,) = _load(env, "web").records("green")
    assert green.args == ("--isolation", "thread")
    said = refused(env, "create", "other", "--model", "stub", "--isolation", "fork")
    assert "isolation is process or thread, not 'fork'" in said, said
    assert not (Path(env["WORKBENCH_HOME"]) / "deployments" / "other").exists()
