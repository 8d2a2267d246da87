"""A deployment's logs by model version: file sources, following, and a real deployment."""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from typer.testing import CliRunner

from tests._wait import wait_until
from tests.serving.conftest import json_infer_body, x_batch
from workbench.cli import app
from workbench.deploy.logs import LogSource, follow, line_version, read

if TYPE_CHECKING:
    from pathlib import Path


def jline(**fields: object) -> str:
    return json.dumps(fields) + "\n"


def test_read_filters_by_version_and_prefixes_the_source(tmp_path: Path) -> None:
    blue, green, router = tmp_path / "blue.log", tmp_path / "green.log", tmp_path / "access.log"
    blue.write_text("plain start-up line\n" + jline(model_version="1.0.0", message="a") * 3)
    green.write_text(jline(model_version="1.1.0", message="b") + "Traceback...\n")
    router.write_text(jline(color="green", version="1.1.0", status=200)
                      + jline(color="blue", version="1.0.0", status=200))
    sources = [LogSource("blue", blue), LogSource("green", green), LogSource("router", router),
               LogSource("docker", snapshot=lambda tail: jline(model_version="1.1.0") * 5)]
    lines = read(sources, "1.1.0")
    assert [line.split(" | ")[0] for line in lines] == ["green", "router"] + ["docker"] * 5
    assert all(line_version(line.split(" | ", 1)[1]) == "1.1.0" for line in lines)
    everything = read(sources, None, tail=2)
    assert "blue | " + jline(model_version="1.0.0", message="a").strip() in everything
    assert "green | Traceback..." in everything
    assert len([line for line in everything if line.startswith("blue")]) == 2
    assert read([LogSource("gone", tmp_path / "missing.log")]) == []


def test_follow_yields_new_matching_lines_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "green.log"
    path.write_text(jline(model_version="1.1.0", n=0))  # already there: not followed
    done = threading.Event()
    got: list[str] = []

    def reader() -> None:
        for line in follow([LogSource("green", path)], "1.1.0", stop=done.is_set, poll=0.05):
            got.append(line)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.2)
    with path.open("a") as handle:
        handle.write(jline(model_version="1.1.0", n=1) + jline(model_version="1.0.0", n=2))
        handle.write('{"model_version": "1.1.0", "n"')  # half a line...
        handle.flush()
        time.sleep(0.2)
        handle.write(": 3}\n")  # ...completed later
    wait_until(lambda: len(got) == 2, 10, what="two followed lines")
    done.set()
    thread.join(5)
    assert [json.loads(line.split(" | ", 1)[1])["n"] for line in got] == [1, 3]


@pytest.mark.nginx
def test_deploy_logs_of_a_real_deployment_by_version(nginx: None, home: Path,
                                                     demo_repo: Path) -> None:
    env = {"WORKBENCH_HOME": str(home), "WORKBENCH_REPO": str(demo_repo), "COLUMNS": "200"}

    def run(*args: str) -> str:
        result = CliRunner().invoke(app, ["deploy", *args], env=env)
        assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
        return result.output

    run("create", "web", "--model", "digits", "--version", "1.0.0")
    try:
        run("update", "web", "--version", "1.1.0")
        run("weight", "web", "50")
        url = json.loads(run("status", "web", "--json"))["url"]
        body = json_infer_body(x_batch(1))
        with httpx.Client(timeout=30) as client:
            answered = [client.post(f"{url}/v2/models/digits/infer", json=body).headers[
                "x-model-version"] for _ in range(20)]
        assert set(answered) == {"1.0.0", "1.1.0"}
        green = [line for line in run("logs", "web", "--version", "1.1.0").splitlines()
                 if line.strip()]
        sources = {line.split(" | ")[0] for line in green}
        assert sources == {"green", "router"}
        docs = [json.loads(line.split(" | ", 1)[1]) for line in green]
        assert all((d.get("model_version") or d.get("version")) == "1.1.0" for d in docs)
        routed = [d for d in docs if "color" in d and d.get("uri", "").endswith("/infer")]
        assert len(routed) == answered.count("1.1.0") and {d["color"] for d in routed} == {"green"}
        served = [d for d in docs if d.get("logger") == "workbench.serving.access"]
        assert len(served) >= answered.count("1.1.0")  # plus the verification's own requests
        blue_only = run("logs", "web", "blue", "--version", "1.1.0")
        assert blue_only.strip() == ""
    finally:
        run("delete", "web", "--yes")
