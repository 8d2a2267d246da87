"""A colour spanning several engines: engines and their addresses, the state, status (pure logic).

The real thing (hosts as network namespaces, each with its own sshd and dockerd) is
``tests/docker/test_fleet_netns.py``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from workbench.deploy.backend import Backend, Instance, InstanceSpec
from workbench.deploy.fleet import Engine, parse_engine, publish_address
from workbench.deploy.manager import fleet_of
from workbench.deploy.platforms.docker.fleet import FleetBackend
from workbench.deploy.records import InstanceRecord
from workbench.deploy.rollout.phases import Phase, Rollout
from workbench.deploy.state import DeploymentState, StateStore
from workbench.deploy.status import look_at_instances
from workbench.errors import BackendError, DeployValueError

if TYPE_CHECKING:
    from pathlib import Path

FLEET = (Engine("ssh://root@127.0.0.11", "127.0.0.11", 2), Engine("ssh://root@127.0.0.12", "127.0.0.12"))


def fleet_state() -> DeploymentState:
    state = DeploymentState(name="web", model="digits", repo="/repo", port=8080, backend="docker",
                            fleet=FLEET, rollout=Rollout(phase=Phase.STABLE))
    records = [
        InstanceRecord.from_instance(Instance(spec, "docker", f"c{k}"), started_at=1.0)
        for k, spec in enumerate(state.instance_specs("blue", "1.0.0", 9000))
    ]
    return state.with_instances(records)


def test_engines_publish_their_hosts_address() -> None:
    assert publish_address("ssh://root@10.231.7.11") == "10.231.7.11"
    assert publish_address("ssh://deploy@localhost:2222") == "127.0.0.1"
    assert publish_address("unix:///run/docker.sock") == "127.0.0.1"
    assert parse_engine("ssh://deploy@127.0.0.2:2222", 3) == Engine(
        "ssh://deploy@127.0.0.2:2222", "127.0.0.2", 3)
    assert parse_engine("ssh://deploy@gpu1=10.0.0.5").address == "10.0.0.5"
    assert parse_engine("ssh://deploy@gpu1", address="10.0.0.6").address == "10.0.0.6"
    with pytest.raises(DeployValueError, match="not a Docker engine URL"):
        parse_engine("gpu1")
    with pytest.raises(DeployValueError, match="cannot resolve"):
        parse_engine("ssh://deploy@no-such-host.invalid")
    with pytest.raises(DeployValueError, match="replicas"):
        Engine("ssh://a@b", "127.0.0.11", 0)


def test_a_remote_docker_host_is_a_fleet_of_one_at_its_address() -> None:
    # before fleets, instances on ssh://deploy@127.0.0.2 were recorded at 127.0.0.1
    (engine,) = fleet_of("docker", "ssh://deploy@127.0.0.2", ())
    assert engine.address == "127.0.0.2"
    assert fleet_of("docker", "unix:///run/docker.sock", ()) == ()
    assert fleet_of("process", None, ()) == ()
    with pytest.raises(DeployValueError, match="backend 'docker'"):
        fleet_of("process", None, FLEET)
    with pytest.raises(DeployValueError, match="twice"):
        fleet_of("docker", None, (FLEET[0], FLEET[0]))


def test_each_engine_runs_its_replicas_at_its_address() -> None:
    specs = fleet_state().instance_specs("green", "1.1.0", 9100, admin_token="t")
    assert [(s.engine, s.host, s.port, s.replica) for s in specs] == [
        ("ssh://root@127.0.0.11", "127.0.0.11", 9100, 0),
        ("ssh://root@127.0.0.11", "127.0.0.11", 9101, 1),
        ("ssh://root@127.0.0.12", "127.0.0.12", 9100, 0),
    ]
    assert all(s.admin_token == "t" and s.color == "green" for s in specs)
    assert InstanceSpec.from_dict(specs[1].to_dict()) == replace(specs[1], admin_token=None, env=())


def test_fleet_state_round_trips_and_reads_as_one_colour(tmp_path: Path) -> None:
    state = fleet_state()
    blue = state.instances["blue"]
    assert len(blue) == 3 and blue.version == "1.0.0" and blue.url == "http://127.0.0.11:9000"
    assert state.replicas == 3 and state.needed() == 3
    assert replace(state, min_ready=2).needed() == 2
    store = StateStore(tmp_path)
    with store.transaction("web") as txn:
        saved = txn.save(state)
    loaded = store.load("web")
    assert loaded == saved and loaded.fleet == FLEET
    assert [(r.engine, r.replica, r.host) for r in loaded.records("blue")] == [
        ("ssh://root@127.0.0.11", 0, "127.0.0.11"),
        ("ssh://root@127.0.0.11", 1, "127.0.0.11"),
        ("ssh://root@127.0.0.12", 0, "127.0.0.12"),
    ]


def test_a_state_written_with_one_instance_per_colour_still_loads(tmp_path: Path) -> None:
    old = {
        "schema": 1, "name": "web", "model": "digits", "repo": "/repo", "port": 8080,
        "rollout": Rollout(phase=Phase.STABLE).to_dict(),
        "instances": {"blue": {"color": "blue", "version": "1.0.0", "host": "127.0.0.1",
                               "port": 9001, "backend": "process", "ref": "42",
                               "started_at": 1.0, "labels": {}}},
    }
    (tmp_path / "deployments" / "web").mkdir(parents=True)
    (tmp_path / "deployments" / "web" / "state.json").write_text(json.dumps(old))
    state = StateStore(tmp_path).load("web")
    assert state.fleet == () and state.engines == (Engine(""),)
    (record,) = state.records()
    assert (record.engine, record.replica, record.ref) == ("", 0, "42")
    assert state.stable is not None and state.stable.ref == "42"
    assert state.stable_version == "1.0.0"


class FakeEngine(Backend):
    """Knobs: ``down`` makes every call fail as an unreachable engine does; ``gone`` refs."""

    name = "docker"

    def __init__(self) -> None:
        self.down = False
        self.gone: set[str] = set()
        self.started: list[InstanceSpec] = []

    def _check(self) -> None:
        if self.down:
            raise BackendError("cannot reach the Docker engine: connection refused")

    def start(self, spec: InstanceSpec) -> Instance:
        self._check()
        self.started.append(spec)
        return Instance(spec, self.name, f"{spec.engine}/{spec.color}/{spec.replica}")

    def stop(self, instance: Instance, timeout: float = 10.0) -> None:
        self._check()
        self.gone.add(instance.ref)

    def is_running(self, instance: Instance) -> bool:
        self._check()
        return instance.ref not in self.gone

    def logs(self, instance: Instance, tail: int = 200) -> str:
        return ""

    def find(self, deployment: str) -> list[Instance]:
        self._check()
        return []


def test_fleet_backend_sends_each_instance_to_its_engine() -> None:
    one, two = FakeEngine(), FakeEngine()
    fleet = FleetBackend({FLEET[0].url: one, FLEET[1].url: two})
    specs = fleet_state().instance_specs("green", "1.1.0", 9100)
    instances = [fleet.start(s) for s in specs]
    assert [s.replica for s in one.started] == [0, 1] and len(two.started) == 1
    two.down = True
    assert fleet.find("web") == []  # an unreachable engine is left out, not an error
    with pytest.raises(BackendError, match="cannot reach"):
        fleet.is_running(instances[2])
    with pytest.raises(BackendError, match="not one of this deployment's engines"):
        fleet.start(replace(specs[0], engine="ssh://other"))


def test_status_shows_lost_instances_without_raising() -> None:
    one, two = FakeEngine(), FakeEngine()
    fleet = FleetBackend({FLEET[0].url: one, FLEET[1].url: two})
    state = fleet_state()
    refs = [r.ref for r in state.records()]
    one.gone.add(refs[1])  # its container is gone
    two.down = True  # its engine is unreachable
    seen = look_at_instances(state, fleet, probe=True, timeout=0.2)
    assert [i.state for i in seen[1:]] == ["lost", "lost"]
    assert "not running" in seen[1].error and "cannot reach" in seen[2].error
    assert [i.engine for i in seen] == [FLEET[0].url, FLEET[0].url, FLEET[1].url]
    assert seen[0].address == "127.0.0.11:9000" and seen[0].to_dict()["state"] in (
        "ready", "not ready")


def test_the_router_gets_every_instance_of_a_colour() -> None:
    from workbench.deploy.deployment import routing_table

    table = routing_table(fleet_state())
    assert [u.address for u in table.upstreams] == [
        "127.0.0.11:9000", "127.0.0.11:9001", "127.0.0.12:9000"]
    assert {u.color for u in table.upstreams} == {"blue"}


def test_cli_refuses_a_bad_engine_in_one_sentence(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    for engine, said in (("gpu1", "is not a Docker engine URL"),
                         ("ssh://deploy@gpu1=", "has an empty address"),
                         ("ssh://deploy@no-such-host.invalid", "cannot resolve"),
                         (None, "go with --engine")):
        flags = ["--engine", engine] if engine else ["--replicas", "2"]
        result = CliRunner().invoke(app, ["deploy", "create", "web", "-m", "digits", *flags])
        # a WorkbenchError, which the console script prints as one sentence with its exit code
        assert isinstance(result.exception, DeployValueError), result.output
        assert said in str(result.exception) and result.exception.exit_code != 1
    assert not (tmp_path / "deployments" / "web").exists()


def test_a_colour_starts_with_min_ready_instances_or_not_at_all() -> None:
    from workbench.deploy.fleet import start_all

    one, two = FakeEngine(), FakeEngine()
    fleet = FleetBackend({FLEET[0].url: one, FLEET[1].url: two})
    specs = fleet_state().instance_specs("green", "1.1.0", 9100)
    two.down = True
    started = start_all(fleet, specs, need=2)  # min_ready 2: the host that is down is left out
    assert [i.spec.engine for i in started] == [FLEET[0].url] * 2 and not one.gone
    with pytest.raises(BackendError, match="cannot reach"):
        start_all(fleet, specs, need=3)  # all needed: none is left running
    assert len(one.gone) == 2

    def not_ready(instance: Instance) -> None:
        if instance.spec.replica == 1:
            raise BackendError("not ready within 1s")

    two.down = False
    started = start_all(fleet, specs, need=2, ready=not_ready)
    assert [(i.spec.engine, i.spec.replica) for i in started] == [(FLEET[0].url, 0), (FLEET[1].url, 0)]
    assert f"{FLEET[0].url}/green/1" in one.gone  # the one that failed readiness was stopped


def test_live_rates_of_a_colour_add_up_its_instances() -> None:
    from workbench.deploy.traffic import Counters, rates

    def at(t: float, requests: float, errors: float, fast: float) -> Counters:
        return Counters(t, requests, errors, ((0.01, fast), (0.5, requests), (math.inf, requests)))

    one = [at(0.0, 100, 0, 100), at(10.0, 200, 0, 200)]  # 10 req/s, all fast
    two = [at(0.0, 50, 0, 50), at(10.0, 150, 10, 50)]  # 10 req/s, 10% errors, all slow
    both = rates(Counters.combined([one[0], two[0]]), Counters.combined([one[1], two[1]]))
    assert both["rps"] == pytest.approx(20.0) and both["error_rate"] == pytest.approx(0.05)
    assert both["p99_ms"] is not None and both["p99_ms"] > 10  # the slow host's latency shows


def test_status_asks_each_engine_once_and_engines_at_the_same_time() -> None:
    # a host that cannot be reached costs one connect timeout, not one per instance,
    # and two dead hosts cost it once, not twice
    class SlowDeadEngine(FakeEngine):
        def __init__(self) -> None:
            super().__init__()
            self.asked = 0

        def is_running(self, instance: Instance) -> bool:
            self.asked += 1
            time.sleep(0.3)  # the connect timeout
            raise BackendError("cannot reach the Docker engine: timed out")

    one, two = SlowDeadEngine(), SlowDeadEngine()
    fleet = FleetBackend({FLEET[0].url: one, FLEET[1].url: two})
    started = time.monotonic()
    seen = look_at_instances(fleet_state(), fleet, probe=True, timeout=0.2)
    elapsed = time.monotonic() - started
    assert [i.state for i in seen] == ["lost", "lost", "lost"]
    assert all("timed out" in i.error for i in seen)
    assert (one.asked, two.asked) == (1, 1)  # engine 0 holds two of the instances
    assert elapsed < 0.55, elapsed  # asked one after the other: 0.9 s
