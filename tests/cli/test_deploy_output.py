"""``workbench deploy status/history`` on a real deployment (stub instances behind nginx):
readable at 80 columns, live traffic with --watch, and a cheap import path."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from tests.cli._modules import HEAVY, loaded_by
from tests.deploy.conftest import MODES, stub_sample
from workbench.cli import app
from workbench.deploy.client import ServingClient

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from workbench.deploy.deployment import Deployment
    from workbench.deploy.manager import DeploymentManager

pytestmark = pytest.mark.nginx
REASON = "try a fifth of the users on the new version before lunch"


@pytest.fixture
def env(home: Path, stub_command: list[str], stub_repo: Path) -> dict[str, str]:
    return {
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_REPO": str(stub_repo),
        "WORKBENCH_SERVE_COMMAND": shlex.join(stub_command),
        "WB_STUB_MODES": json.dumps(MODES),
        "COLUMNS": "80",
    }


@pytest.fixture
def canary(nginx: None, make_manager: Callable[..., DeploymentManager]) -> Deployment:
    web = make_manager().create("web", "stub", "stable")
    web.update("1.1.0")
    web.weight(20, REASON)
    return web


def cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    return result.output


def test_status_at_80_columns_shows_every_colour_whole(canary: Deployment, env: dict[str, str]) -> None:
    out = cli(env, "deploy", "status", "web")
    assert canary.url in out and "canary" in out and "router up" in out
    for record, version, weight in ((canary.state.instances["blue"], "1.0.0", "80%"),
                                    (canary.state.instances["green"], "1.1.0", "20%")):
        row = next(line for line in out.splitlines() if record.url in line)
        assert version in row and weight in row and "yes" in row


def test_status_of_all_shows_the_readable_deployments_beside_an_unreadable_one(
        canary: Deployment, env: dict[str, str], home: Path) -> None:
    junk = home / "deployments" / "junk"
    junk.mkdir()
    (junk / "state.json").write_text("[]\n")
    try:
        result = CliRunner().invoke(app, ["deploy", "status"], env=env)
        assert result.exit_code == 1, result.output  # shown, but not all is well
        assert "web  stub  canary" in result.output
        assert "state of deployment 'junk'" in " ".join(result.output.split())
        result = CliRunner().invoke(app, ["deploy", "status", "--json"], env=env)
        assert result.exit_code == 1, result.output
        assert [s["name"] for s in json.loads(result.stdout)] == ["web"]
    finally:
        shutil.rmtree(junk)


def test_status_exits_1_while_a_colour_taking_traffic_is_down(canary: Deployment,
                                                                env: dict[str, str]) -> None:
    cli(env, "deploy", "status", "web")  # exits 0 while healthy
    green = canary.state.instances["green"]
    os.kill(int(green.ref), signal.SIGKILL)  # the canary's instance, at 20% of the traffic
    for args in (["web"], [], ["--json"]):
        result = CliRunner().invoke(app, ["deploy", "status", *args], env=env)
        assert result.exit_code == 1, result.output
    assert [s["healthy"] for s in json.loads(result.stdout)] == [False]
    canary.rollback("the canary's instance died")  # stable alone takes the traffic again
    cli(env, "deploy", "status", "web")


@pytest.mark.parametrize("args", [["--interval", "-1", "--count", "2"], ["--interval", "0", "--count", "2"],
                                  ["--count", "0"]])
def test_status_watch_refuses_a_non_positive_interval_or_count(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", "status", "--watch", *args],
                                env={"WORKBENCH_HOME": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output and result.exception is not None
    assert not isinstance(result.exception, ValueError)


@pytest.mark.parametrize("args", [["history", "web", "--limit", "0"], ["history", "web", "--limit", "-1"],
                                  ["logs", "web", "--tail", "-3"]])
def test_history_and_logs_refuse_a_negative_or_empty_count(args: list[str], canary: Deployment,
                                                           env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["deploy", *args], env=env)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


def test_history_at_80_columns_keeps_each_action_on_a_line_and_its_reason_whole(
    canary: Deployment, env: dict[str, str]
) -> None:
    out = cli(env, "history", "web")
    lines = out.splitlines()
    weight = next(line for line in lines if " weight " in line)
    assert re.match(r"\d\d:\d\d:\d\d  weight ", weight)
    assert "ok" in weight and "canary" in weight and "80/20" in weight and "1.0.0 → 1.1.0" in weight
    assert REASON in lines[lines.index(weight) + 1]
    for action in ("create", "update", "verify"):
        assert any(re.match(rf"\d\d:\d\d:\d\d  {action} ", line) for line in lines), action


def send(url: str, stop: threading.Event) -> None:
    with ServingClient(url) as client:
        while not stop.is_set():
            client.infer("stub", {"x": stub_sample(2)})


def test_status_watch_shows_requests_per_second_errors_p99_and_a_timestamp(
    canary: Deployment, env: dict[str, str]
) -> None:
    stop = threading.Event()
    load = threading.Thread(target=send, args=(canary.url, stop), daemon=True)
    load.start()
    try:
        out = cli(env, "status", "web", "--watch", "--count", "2", "--interval", "0.5")
        frames = watch_frames(env, "web", "--count", "2", "--interval", "0.5")
    finally:
        stop.set()
        load.join(10)
    lines = out.splitlines()
    headings = [line for line in lines if line.startswith("web ")]
    assert len(headings) == 2  # piped: one frame after the other
    assert all(re.search(r"  \d\d:\d\d:\d\d$", line) for line in headings)
    header = next(line for line in lines if "colour" in line)
    assert "req/s" in header and "errors" in header and "p99 ms" in header
    first, second = (line.split() for line in lines if line.startswith("blue"))
    assert first[5] == "–"  # one scrape gives no rate yet
    assert float(second[5]) > 0 and second[6] == "0.0%"
    assert len(frames) == 2
    assert frames[0][0]["traffic"]["blue"]["rps"] is None  # one scrape gives no rate yet
    assert frames[1][0]["traffic"]["blue"]["rps"] > 0
    assert frames[1][0]["traffic"]["blue"]["error_rate"] == 0.0


def test_verbs_that_start_no_instance_load_nothing_heavy(canary: Deployment, env: dict[str, str]) -> None:
    for argv in (("status", "web"), ("history", "web"), ("deploy", "promote", "web"),
                 ("rollback", "web")):
        loaded = loaded_by(*argv, env=env)
        assert not loaded & {*HEAVY, "prometheus_client"}, (argv, loaded & {*HEAVY})
    assert canary.state.phase == "rolled_back" and canary.state.weights["blue"] == 100


def watch_frames(env: dict[str, str], *args: str) -> list[list[dict[str, object]]]:
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "status", *args, "--watch", "--json"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=True,
    )
    decoder, text, frames = json.JSONDecoder(), proc.stdout.strip(), []
    while text:
        frame, end = decoder.raw_decode(text)
        frames.append(frame)
        text = text[end:].strip()
    return frames


@pytest.mark.slow
def test_status_watch_p99_from_a_real_serving_instance(nginx: None, demo_repo: Path, home: Path) -> None:
    """`workbench serve` (Paddle, digits) behind nginx: p99 comes from its latency histogram."""
    import numpy as np

    from workbench.deploy.manager import DeploymentManager

    manager = DeploymentManager(home, repo=demo_repo)
    web = manager.create("digits", "digits", "stable", timeout=300)
    stop = threading.Event()

    def load() -> None:
        x = {"x": np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)}
        with ServingClient(web.url) as client:
            while not stop.is_set():
                client.infer("digits", x)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        env = {"WORKBENCH_HOME": str(home), "WORKBENCH_REPO": str(demo_repo)}
        frames = watch_frames(env, "digits", "--count", "2", "--interval", "1")
    finally:
        stop.set()
        thread.join(10)
        manager.delete("digits")
    blue = frames[1][0]["traffic"]["blue"]  # type: ignore[index]
    assert blue["rps"] > 0 and blue["error_rate"] == 0.0
    assert 0 < blue["p99_ms"] < 10_000
