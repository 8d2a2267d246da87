"""Blue/green deployments end to end: real nginx, real processes (the stub server).

Each test drives the public API (``DeploymentManager`` / ``Deployment``) and checks
what a client of the router sees: which colour answers (``x-deploy-color``) and
which version (``x-model-version``).
"""

from __future__ import annotations

import collections
import json
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

from tests.deploy.conftest import stub_sample

# the Docker engine fixtures, for the docker-backed rollout at the end
from tests.docker.conftest import docker_engine, served_repo  # noqa: F401
from workbench.deploy.client import ServingClient
from workbench.deploy.rollout.phases import Phase
from workbench.errors import RolloutError, RouterError, WorkbenchError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.docker.conftest import DockerEngine
    from workbench.deploy.deployment import Deployment
    from workbench.deploy.manager import DeploymentManager

pytestmark = pytest.mark.nginx


def colors(url: str, n: int = 40, headers: dict[str, str] | None = None) -> collections.Counter[str]:
    """Which colour answered ``n`` inference requests through the router."""
    seen: collections.Counter[str] = collections.Counter()
    with ServingClient(url) as client:
        for _ in range(n):
            result = client.infer("stub", {"x": stub_sample(2)}, headers=headers)
            seen[f"{result.color}:{result.version}"] += 1
    return seen


@pytest.fixture
def web(nginx: None, make_manager: Callable[..., DeploymentManager]) -> Deployment:
    return make_manager().create("web", "stub", "stable")


def test_create_puts_blue_live_behind_the_router(web: Deployment) -> None:
    state = web.state
    assert state.phase == "stable" and state.stable_version == "1.0.0"
    assert state.weights == {"blue": 100}
    assert colors(web.url, 5) == {"blue:1.0.0": 5}
    status = web.status()
    assert status.healthy and status.router_running
    assert [(i.color, i.running, i.ready) for i in status.instances] == [("blue", True, True)]
    assert [h.action for h in web.history()] == ["create"]


def test_update_verifies_reports_agreement_and_waits_for_promote(web: Deployment) -> None:
    state = web.update("1.1.0")
    assert state.rollout.phase is Phase.VERIFIED
    assert state.candidate_version == "1.1.0"
    report = web.agreement
    assert report is not None and report["passed"] and report["top1"] == 1.0
    assert report["rows"] == 200 and report["max_abs_diff"] == 0.0
    # verified but not promoted: green is warm and gets nothing
    assert colors(web.url, 10) == {"blue:1.0.0": 10}
    assert colors(web.url, 2, {"x-model-version": "1.1.0"}) == {"green:1.1.0": 2}

    web.promote()
    assert colors(web.url, 10) == {"green:1.1.0": 10}
    web.rollback(reason="testing rollback")
    state = web.state
    assert state.rollout.phase is Phase.ROLLED_BACK and state.weights == {"blue": 100}
    assert "green" not in state.instances
    assert colors(web.url, 10) == {"blue:1.0.0": 10}
    actions = [(h.action, h.outcome) for h in web.history()]
    assert actions == [
        ("create", "ok"), ("update", "ok"), ("agreement", "ok"), ("verify", "ok"),
        ("promote", "ok"), ("rollback", "ok"),
    ]
    last = web.history()[-1]
    assert (last.reason, last.stable_version, last.phase) == ("testing rollback", "1.0.0",
                                                              "rolled_back")


def test_weight_switch_and_the_next_update_alternate_colours(web: Deployment,
                                                             tmp_path: Path) -> None:
    sample = tmp_path / "extra.npz"
    np.savez(sample, x=stub_sample(4, seed=7))
    web.update("1.1.0", sample_file=sample)
    assert web.agreement is not None and web.agreement["rows"] == 204
    web.weight(50)
    seen = colors(web.url, 60)
    assert set(seen) == {"blue:1.0.0", "green:1.1.0"} and min(seen.values()) >= 10
    # sticky: one user id always lands on one colour
    for user in ("ada", "bob", "cy"):
        assert len(colors(web.url, 8, {"x-user-id": user})) == 1
    web.switch()
    assert colors(web.url, 5) == {"green:1.1.0": 5}
    web.switch()
    assert colors(web.url, 5) == {"blue:1.0.0": 5}
    web.switch()
    state = web.state
    assert state.rollout.phase is Phase.PROMOTED and state.weights == {"blue": 0, "green": 100}
    # the next rollout keeps green (now stable) and starts the candidate on blue
    state = web.update("1.0.0", auto_promote=True)
    assert state.rollout.phase is Phase.PROMOTED
    assert state.rollout.stable == "green" and state.instances["blue"].version == "1.0.0"
    assert colors(web.url, 5) == {"blue:1.0.0": 5}


def test_abort_drops_green(web: Deployment) -> None:
    web.update("1.1.0")
    web.abort()
    state = web.state
    assert state.rollout.phase is Phase.STABLE and set(state.instances) == {"blue"}
    assert colors(web.url, 5) == {"blue:1.0.0": 5}
    with pytest.raises(RolloutError, match="cannot promote in phase 'stable'"):
        web.promote()
    assert web.history()[-1].outcome == "refused"


def test_disagreeing_green_is_reported_and_refused_with_a_threshold(web: Deployment) -> None:
    state = web.update("1.2.0", min_agreement=0)  # no threshold: reported, still verified
    assert state.rollout.phase is Phase.VERIFIED
    assert web.agreement is not None and web.agreement["top1"] < 0.5
    web.abort()
    with pytest.raises(RolloutError, match="below the threshold 85.0%"):
        web.update("1.2.0")  # the default threshold
    with pytest.raises(RolloutError, match="agreement failed"):
        web.update("1.2.0", min_agreement=0.9)
    state = web.state
    assert state.rollout.phase is Phase.FAILED and "green" not in state.instances
    assert colors(web.url, 5) == {"blue:1.0.0": 5}


def test_an_unreadable_sample_does_not_pass_the_agreement_check(
    nginx: None, make_manager: Callable[..., DeploymentManager], stub_repo: Path, tmp_path: Path
) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(stub_repo, repo)
    (sample,) = (repo / "stub" / "1.1.0").glob("sample*")
    sample.write_bytes(b"not an npz archive")
    web = make_manager(repo=repo).create("web", "stub", "1.0.0")
    with pytest.raises(RolloutError, match="cannot read the manifest sample of 1.1.0"):
        web.update("1.1.0")
    assert web.state.rollout.phase is Phase.FAILED


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("1.3.0", "timed out waiting for ready"),
        ("1.4.0", "exited"),
        ("1.5.0", "deep health failed: stub deep check fails"),
    ],
)
def test_a_green_that_fails_never_receives_traffic(web: Deployment, version: str,
                                                   message: str) -> None:
    router = web.context.router(web.state)
    tables = []
    with pytest.raises(RolloutError, match=message):
        web.update(version, timeout=3.0, on_tick=lambda s: tables.append(router.table))
    state = web.state
    assert state.rollout.phase is Phase.FAILED and message in state.rollout.message
    assert set(state.instances) == {"blue"}
    assert all(t is not None and t.green_weight == 0 for t in tables)
    assert colors(web.url, 5) == {"blue:1.0.0": 5}
    greens = [json.loads(line) for line in router.access_log.read_text().splitlines()]
    assert not [g for g in greens if g["color"] == "green"]
    assert web.history()[-1].outcome == "failed"
    # the failed rollout can be retried with a good version
    assert web.update("1.1.0").rollout.phase is Phase.VERIFIED


def test_a_port_in_use_fails_the_candidate_and_leaves_blue_live(web: Deployment) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(RolloutError, match=f"port {port} on 127.0.0.1 is in use"):
            web.update("1.1.0", instance_port=port)
    state = web.state
    assert state.rollout.phase is Phase.FAILED and set(state.instances) == {"blue"}
    assert colors(web.url, 5) == {"blue:1.0.0": 5}


def test_create_refuses_a_public_port_in_use_and_a_second_create(
    web: Deployment, make_manager: Callable[..., DeploymentManager]
) -> None:
    from workbench.errors import DeployError

    manager = make_manager()
    with pytest.raises(DeployError, match="already exists"):
        manager.create("web", "stub", "1.0.0")
    with pytest.raises(DeployError, match=f"port {web.state.port} on 127.0.0.1 is in use"):
        manager.create("other", "stub", "1.0.0", port=web.state.port)
    with pytest.raises(DeployError, match=r"has no version or alias '9\.9\.9'"):
        manager.create("other", "stub", "9.9.9")
    with pytest.raises(WorkbenchError, match="exited"):
        manager.create("other", "stub", "1.4.0", timeout=20)  # crashes during start
    assert manager.names() == ["web"]
    assert not manager.store.directory("other").exists()  # not even an empty directory


def test_update_resolves_versions_in_the_deployments_repository(
    web: Deployment, make_manager: Callable[..., DeploymentManager], tmp_path: Path,
    stub_repo: Path,
) -> None:
    from workbench.errors import DeployError

    # another shell whose $WORKBENCH_REPO is elsewhere (here: an empty repository)
    elsewhere = make_manager(repo=tmp_path / "other-repo").get("web")
    with pytest.raises(DeployError, match=f"repository {stub_repo}") as refused:
        elsewhere.update("9.9.9")
    assert "other-repo" not in str(refused.value)
    state = elsewhere.update("1.1.0", timeout=30)
    assert state.phase == "verified" and state.candidate_version == "1.1.0"


def test_events_are_emitted_after_each_action(web: Deployment) -> None:
    events = []
    web.context.events.subscribe(events.append)
    web.update("1.1.0")
    web.weight(10)
    web.abort()
    assert [(e.action, e.outcome, e.phase) for e in events] == [
        ("update", "ok", "starting"), ("agreement", "ok", "verified"),
        ("verify", "ok", "verified"), ("weight", "ok", "canary"), ("abort", "ok", "stable"),
    ]
    assert events[3].weights == {"blue": 90, "green": 10}


def test_a_bad_nginx_config_is_never_installed(
    nginx: None, make_manager: Callable[..., DeploymentManager]
) -> None:
    from workbench.deploy.nginx import NginxRouter

    broken = {"on": False}

    class FlakyRouter(NginxRouter):
        def render(self, table):  # type: ignore[no-untyped-def]
            text = super().render(table)
            return text + "\nthis is not nginx;\n" if broken["on"] else text

    web = make_manager(router_factory=FlakyRouter).create("web", "stub", "1.0.0")
    web.update("1.1.0")
    installed = web.context.router(web.state).conf_path.read_text()
    broken["on"] = True
    with pytest.raises(RouterError):
        web.promote()
    state = web.state
    assert state.rollout.phase is Phase.VERIFIED and state.weights == {"blue": 100, "green": 0}
    assert web.context.router(web.state).conf_path.read_text() == installed
    assert colors(web.url, 5) == {"blue:1.0.0": 5}
    assert web.history()[-1].action == "promote" and web.history()[-1].outcome == "failed"
    broken["on"] = False
    web.promote()
    assert colors(web.url, 5) == {"green:1.1.0": 5}


def test_state_survives_a_new_manager(web: Deployment,
                                      make_manager: Callable[..., DeploymentManager]) -> None:
    web.update("1.1.0")
    again = make_manager().get("web")  # as a restarted kernel or a new shell would
    assert again.state == web.state
    again.promote()
    assert colors(web.url, 5) == {"green:1.1.0": 5}
    status = again.status()
    assert all(i.running and i.ready for i in status.instances)


def test_another_process_can_finish_an_interrupted_rollout(
    web: Deployment, make_manager: Callable[..., DeploymentManager]
) -> None:
    assert web.update("1.1.0", wait=False).rollout.phase is Phase.STARTING
    done = make_manager().get("web").wait(poll=0.05)
    assert done.rollout.phase is Phase.VERIFIED and web.agreement is not None
    assert make_manager().get("web").wait() == done  # nothing in progress: returns at once


def test_restore_after_a_host_restart(web: Deployment) -> None:
    import os
    import signal

    web.update("1.1.0")
    web.weight(50)
    before = web.state
    os.kill(int(before.instances["green"].ref), signal.SIGKILL)  # as a reboot would
    web.context.router(web.state).stop()
    status = web.status()
    assert not status.router_running and not status.instances[1].running
    state = web.restore(timeout=30)
    assert state.history[-1].reason == "restarted green 1.1.0 and the router"
    assert state.instances["blue"] == before.instances["blue"]  # still ran: left alone
    assert state.instances["green"].port == before.instances["green"].port
    assert state.weights == {"blue": 50, "green": 50}
    assert set(colors(web.url, 30)) == {"blue:1.0.0", "green:1.1.0"}
    assert web.restore().history[-1].reason == "restarted no instance"


def test_an_update_killed_before_it_recorded_its_instance_leaves_nothing_stuck(
    web: Deployment,
) -> None:
    from workbench.deploy.backend import InstanceSpec

    state = web.update("1.1.0", wait=False)
    engine = web.context.backend(web.state)
    # simulate: the updater died between starting green and recording it
    web.abort()
    orphan = engine.start(InstanceSpec(deployment="web", color="green", model="stub",
                                       version="1.1.0", repo=state.repo, port=state.plan.port))
    assert web.update("1.1.0").rollout.phase is Phase.VERIFIED
    assert not engine.is_running(orphan)
    assert [i.spec.color for i in engine.find("web")].count("green") == 1


def test_delete_stops_everything(web: Deployment) -> None:
    web.update("1.1.0")
    url = web.url
    refs = [int(r.ref) for r in web.state.instances.values()]
    web.delete()
    assert web.context.store.names() == []
    import psutil

    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in refs)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/router/health", timeout=1)


@pytest.mark.slow
def test_real_serving_instances_blue_green(nginx: None, demo_repo: Path, home: Path) -> None:
    """`workbench serve` with Paddle on the demo digits model: create, update, promote, rollback."""
    from workbench.deploy.manager import DeploymentManager

    manager = DeploymentManager(home, repo=demo_repo)
    web = manager.create("digits", "digits", "stable", timeout=300)
    try:
        x = {"x": np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)}
        with ServingClient(web.url) as client:
            assert client.infer("digits", x).version == "1.0.0"
            # the default threshold rejects the degraded version with confidence...
            with pytest.raises(RolloutError, match="below the threshold 85.0%"):
                web.update("1.2.0", timeout=300)
            report = web.agreement
            assert report is not None and not report["errors"] and report["rows"] >= 300
            assert report["candidate_version"] == "1.2.0" and report["interval"][1] < 0.85
            assert web.state.rollout.phase is Phase.FAILED
            assert {client.infer("digits", x).color for _ in range(5)} == {"blue"}
            # ... and passes the better one
            state = web.update("1.1.0", timeout=300)
            report = web.agreement
            assert report is not None and report["passed"] and report["interval"][0] >= 0.85
            assert report["verdict"] == "passed (>= 85.0%)"
            assert state.rollout.phase is Phase.VERIFIED
            web.promote()
            answers = {(r.color, r.version) for r in (client.infer("digits", x) for _ in range(5))}
            assert answers == {("green", "1.1.0")}
            web.rollback(reason="back to 1.0.0")
            answers = {(r.color, r.version) for r in (client.infer("digits", x) for _ in range(5))}
            assert answers == {("blue", "1.0.0")}
        assert web.state.candidate is None
    finally:
        manager.delete("digits")


@pytest.mark.slow
@pytest.mark.docker
def test_docker_backend_blue_green(request: pytest.FixtureRequest, home: Path) -> None:
    """The same rollout with serving containers of the workbench image on a real engine,
    behind a router that runs in containers of that image on that engine."""
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.platforms.docker.router import DockerNginx

    engine: DockerEngine = request.getfixturevalue("docker_engine")
    repo: Path = request.getfixturevalue("served_repo")
    manager = DeploymentManager(home, repo=repo)
    web = manager.create("dock", "digits", "1.0.0", backend="docker", docker_host=engine.host,
                         backend_options={"image": engine.image}, timeout=300)
    router = manager.router("dock")
    confs = (router.conf_path, router.front_conf_path)
    try:
        state = web.state
        assert state.backend == "docker" and state.backend_options["image"] == engine.image
        assert state.router == "docker" and isinstance(router.runner, DockerNginx)
        for conf in confs:  # the router and its front, each in a container of the image
            container = engine.client.containers.get(DockerNginx.container_name(conf))
            assert container.status == "running" and container.attrs["Config"]["Image"] == engine.image
        x = {"x": np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)}
        web.update("1.1.0", timeout=300)
        assert web.agreement is not None and web.agreement["rows"] > 0
        # a new manager (another shell) finds the containers and the router through the
        # persisted state, and switches traffic by reloading the router container
        again = DeploymentManager(home, repo=repo).get("dock")
        status = again.status()
        assert status.router_running and all(i.running and i.ready for i in status.instances)
        again.promote()
        with ServingClient(web.url) as client:
            assert {(r.color, r.version) for r in (client.infer("digits", x) for _ in range(4))} \
                == {("green", "1.1.0")}
            again.rollback()
            assert {(r.color, r.version) for r in (client.infer("digits", x) for _ in range(4))} \
                == {("blue", "1.0.0")}
    finally:
        manager.delete("dock")
    from workbench.deploy.platforms.docker.backend import LABEL

    left = engine.client.containers.list(all=True, filters={"label": f"{LABEL}.deployment=dock"})
    assert left == []
    for conf in confs:
        name = DockerNginx.container_name(conf)
        assert engine.client.containers.list(all=True, filters={"name": name}) == []


def kill_and_wait(pid: int) -> None:
    """SIGKILL ``pid`` and wait until it is dead: delivery is asynchronous, and a master
    still running for a moment on a busy host looks healthy to the next command."""
    import os
    import signal

    import psutil

    from tests._wait import wait_until
    from workbench.deploy.spawn import alive

    proc = psutil.Process(pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(proc), 10, 0.01, what=f"process {pid} dead")


def test_rollback_and_restore_recover_from_a_killed_front_master(web: Deployment) -> None:
    import psutil

    web.update("1.1.0", timeout=30)
    web.promote()
    front_pid = int((web.context.store.directory("web") / "router" / "front" / "nginx.pid")
                    .read_text())
    workers = psutil.Process(front_pid).children()
    assert workers
    kill_and_wait(front_pid)  # its workers live on, holding the port
    state = web.rollback("front master was killed")
    assert state.phase == "rolled_back"
    assert colors(web.url, 5) == {"blue:1.0.0": 5}
    # the orphaned workers were killed (a busy host may take a moment to show it)
    from tests._wait import wait_until
    from workbench.deploy.spawn import alive

    wait_until(lambda: not any(alive(w) for w in workers), 10, 0.1, what="orphaned nginx workers gone")

    front_pid = int((web.context.store.directory("web") / "router" / "front" / "nginx.pid")
                    .read_text())
    kill_and_wait(front_pid)
    restored = web.restore(timeout=30)
    assert restored.history[-1].outcome == "ok"
    assert colors(web.url, 5) == {"blue:1.0.0": 5}
