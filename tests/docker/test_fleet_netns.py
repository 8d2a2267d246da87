"""A fleet for real: a deployment whose colours span two Docker hosts behind one router.

The two hosts are network namespaces on a private bridge (``tests/docker/_netns.py``),
each with its own sshd and dockerd; the engines are ``ssh://root@10.231.7.11`` and
``.12``, reached through paramiko like any remote engine; the router (nginx) runs in the
root namespace. Under bounded load through the router: create (blue on both hosts) →
update (green on both) → promote → rollback; then one host's dockerd is stopped
mid-traffic. No client request may fail, and ``status`` shows the lost instance.
Traffic goes only to loopback (the router) and to these hosts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from typer.testing import CliRunner

from tests._components import require
from tests._wait import wait_until
from tests.deploy._load import Load
from tests.docker._netns import HostFleet, missing_tools, netns_works
from tests.serving.conftest import metric_value
from workbench.cli import app
from workbench.deploy.fleet import parse_engine
from workbench.deploy.rollout.phases import Phase

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.docker.conftest import DockerEngine
    from workbench.deploy.deployment import Deployment
    from workbench.deploy.state import DeploymentState

pytestmark = [pytest.mark.usefixtures("no_user_ssh_config"), pytest.mark.docker,
              pytest.mark.sshd, pytest.mark.nginx, pytest.mark.slow]

HOSTS = 2


@pytest.fixture(scope="module")
def fleet(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFleet]:
    missing = missing_tools()
    require("network namespace hosts", not missing, f"missing {', '.join(missing)}")
    why = netns_works()
    require("network namespaces", not why, why)
    hosts = HostFleet(HOSTS, tmp_path_factory.mktemp("fleet-keys"))
    try:
        hosts.open(docker_engine.image, docker_engine.host)
        print("fleet set-up: " + ", ".join(f"{k} {v:.1f}s" for k, v in hosts.timings.items()))
        yield hosts
    finally:
        hosts.close()


def served(url: str) -> float:
    """Inference requests an instance answered."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    try:
        return metric_value(text, "workbench_requests_total", model="digits", outcome="ok")
    except AssertionError:
        return 0.0


def color_at(state: DeploymentState, color: str) -> list[tuple[str, str]]:
    return [(r.engine, r.host) for r in state.records(color)]  # type: ignore[arg-type]


def answered_since(load: Load, moment: float) -> Counter[str]:
    return Counter(c for _, _, c in load.since(moment))


def test_blue_green_across_two_hosts_and_a_host_lost_under_load(
    fleet: HostFleet, docker_engine: DockerEngine, served_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workbench.cli._deploy_view import status_view
    from workbench.deploy.manager import DeploymentManager

    hosts = fleet.hosts
    engines = [parse_engine(h.url) for h in hosts]
    assert [e.address for e in engines] == [h.address for h in hosts]
    home = Path(tempfile.mkdtemp(prefix="wb-", dir="/tmp"))  # the router's socket path is short
    manager = DeploymentManager(home, repo=served_repo)
    options = {"image": docker_engine.image, "known_hosts": str(fleet.known_hosts),
               "identity_file": str(fleet.identity_file), "start_grace": "1"}
    web: Deployment | None = None
    try:
        web = manager.create("fleet", "digits", "1.0.0", backend="docker", engines=engines,
                             backend_options=options, timeout=300)
        state = web.state
        assert state.router == "process" and state.url.startswith("http://127.0.0.1:")
        # each instance is recorded at the address its host publishes, not at loopback
        assert color_at(state, "blue") == [(h.url, h.address) for h in hosts]

        # bounded: 2 clients at 20 requests/s each, at most 40 000 requests and 15 minutes
        with Load(web.url, threads=2, rate=20.0, max_requests=40_000, max_seconds=900.0) as load:
            wait_until(lambda: len(load.since(0)) >= 40, 120, 0.05, what="load through the router")
            # the router balances over both hosts
            blue = state.records("blue")
            wait_until(lambda: all(served(r.url) > 0 for r in blue), 30, 0.2,
                       what="requests on both hosts")

            state = web.update("1.1.0", timeout=300, min_agreement=0.0)
            assert state.rollout.phase is Phase.VERIFIED
            assert color_at(state, "green") == [(h.url, h.address) for h in hosts]

            state = web.promote()
            promoted = time.monotonic()
            wait_until(lambda: answered_since(load, promoted)["green"] >= 20, 60, 0.1,
                       what="traffic on green")
            green = state.records("green")
            wait_until(lambda: all(served(r.url) > 0 for r in green), 30, 0.2,
                       what="green requests on both hosts")

            state = web.rollback("back to 1.0.0")
            rolled = time.monotonic()
            assert state.phase == "rolled_back" and state.candidate is None
            for host in hosts:  # green's containers are gone from both hosts
                names = host.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
                assert names == ["workbench-fleet-blue"], (host.name, names)
            wait_until(lambda: len(load.since(rolled)) >= 20, 60, 0.1, what="traffic after rollback")
            time.sleep(1.0)  # requests still in flight on green when it stopped have been answered
            assert set(answered_since(load, rolled + 1.0)) == {"blue"}

            # a host goes down mid-traffic: its engine stops (and with it its containers)
            lost_host = hosts[1]
            stopped = time.monotonic()
            lost_host.stop_dockerd()  # returns once the engine (and its containers) are gone
            gone = time.monotonic()
            wait_until(lambda: len(load.since(gone)) >= 80, 60, 0.1,
                       what="traffic after the host went down")
            during = answered_since(load, stopped)

        assert not load.errors, load.errors[:5]  # zero failed client requests
        assert Counter(s for _, s, _ in load.answers) == {200: len(load.answers)}

        status = web.status(timeout=5.0)
        seen = {(i.color, i.engine): i for i in status.instances}
        assert seen[("blue", hosts[0].url)].state == "ready"
        lost = seen[("blue", lost_host.url)]
        assert lost.state == "lost" and lost.error, lost
        assert status.to_dict()["instances"][1]["state"] == "lost"
        from rich.console import Console

        console = Console(width=80, record=True)  # prints to the test's output, too
        console.print(status_view(status))
        text = console.export_text()
        assert "lost" in text and lost_host.address in text, text
        # the same through the CLI, as an SSH session would ask
        monkeypatch.setenv("WORKBENCH_HOME", str(home))
        result = CliRunner().invoke(app, ["deploy", "status", "fleet", "--json"])
        assert result.exit_code == 1, result.output  # a blue instance short: not healthy
        assert json.loads(result.stdout)["healthy"] is False
        shown = json.loads(result.stdout)["instances"]
        assert [(i["engine"], i["address"].split(":")[0], i["state"]) for i in shown] == [
            (hosts[0].url, hosts[0].address, "ready"), (lost_host.url, lost_host.address, "lost")]

        # the host comes back: restore restarts its instance where it was
        lost_host.start_dockerd()
        lost_host.wait_dockerd()
        state = web.restore(timeout=300)
        assert state.history[-1].outcome == "ok" and lost_host.url in state.history[-1].reason
        assert color_at(state, "blue") == [(h.url, h.address) for h in hosts]
        assert [i.state for i in web.status(timeout=5.0).instances] == ["ready", "ready"]
        print(f"fleet under load: {len(load.answers)} requests, 0 failed; {dict(during)} "
              f"answered from the host's stop ({gone - stopped:.1f}s) on")
    finally:
        if web is not None:
            manager.delete("fleet")
        manager.close()  # its SSH connections to the hosts
        shutil.rmtree(home, ignore_errors=True)
