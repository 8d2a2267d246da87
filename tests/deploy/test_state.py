"""Persisted deployment state: round trips, atomic writes, the file lock, history."""

from __future__ import annotations

import json
import multiprocessing
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from workbench.deploy.records import InstanceRecord
from workbench.deploy.rollout.analysis import AnalysisSpec
from workbench.deploy.rollout.phases import Phase, Rollout
from workbench.deploy.state import (
    MAX_HISTORY,
    PREVIOUS_FILE,
    CanaryState,
    DeploymentState,
    Plan,
    StateStore,
)
from workbench.errors import StateCorruptError, StateError


def make_state(name: str = "web") -> DeploymentState:
    blue = InstanceRecord(
        color="blue", version="1.0.0", host="127.0.0.1", port=9001, backend="process",
        ref="1234", started_at=1.0, labels={"create_time": "5.0"},
    )
    return DeploymentState(
        name=name, model="digits", repo="/repo", port=8080, instances={"blue": blue},
        rollout=Rollout(phase=Phase.STABLE),
    )


def test_state_round_trips_through_json(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = make_state().record("create", "ok", "blue live")
    state = replace(state, plan=Plan(version="1.1.0", port=9002, min_agreement=0.9))
    with store.transaction("web") as txn:
        assert not txn.exists
        saved = txn.save(state)
    assert saved.revision == 1 and saved.created_at > 0
    loaded = store.load("web")
    assert loaded == saved
    assert loaded.stable_version == "1.0.0" and loaded.candidate_version is None
    assert loaded.weights == {"blue": 100}
    assert loaded.history[0].action == "create" and loaded.history[0].actor
    data = json.loads(store.path("web").read_text())
    assert data["schema"] == 1 and data["url"] == "http://127.0.0.1:8080"


def test_a_state_written_before_routers_had_a_place_runs_a_local_router(tmp_path: Path) -> None:
    data = make_state().to_dict()
    del data["router"]
    assert DeploymentState.from_dict(data).router == "process"
    docker = replace(make_state(), backend="docker", router="docker")
    assert DeploymentState.from_dict(docker.to_dict()).router == "docker"


def test_missing_and_invalid_states_are_state_errors(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(StateError, match="no deployment named 'web'"):
        store.load("web")
    store.path("web").parent.mkdir(parents=True)
    store.path("web").write_text("{not json")
    with pytest.raises(StateError, match="is unreadable"):
        store.load("web")
    assert store.all() == []  # unreadable states are skipped when listing


@pytest.mark.parametrize(("text", "reason"), [
    ("[]\n", "a JSON object expected, not list"),
    ('{"name": "web", "model": "digits", "repo": "r", "port": 1, "plan": [],\n'
     ' "rollout": {"phase": "stable", "stable": "blue"}}\n', ""),
])
def test_a_state_of_the_wrong_shape_is_unreadable_not_a_crash(text: str, reason: str, tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.path("web").parent.mkdir(parents=True)
    store.path("web").write_text(text)
    with pytest.raises(StateCorruptError, match="is unreadable") as raised:
        store.load("web")
    assert reason in str(raised.value)
    assert store.all() == []
    store.directory("web").joinpath(PREVIOUS_FILE).write_text(text)
    assert store.load_previous("web") is None


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.transaction("web") as txn:
        txn.save(make_state())
    files = sorted(p.name for p in store.directory("web").iterdir())
    assert files == ["state.json", "state.json.lock"]


def test_history_is_capped(tmp_path: Path) -> None:
    state = make_state()
    for i in range(MAX_HISTORY + 5):
        state = state.record("weight", "ok", str(i), now=float(i))
    assert len(state.history) == MAX_HISTORY
    assert state.history[-1].reason == str(MAX_HISTORY + 4)


def test_lock_timeout_is_a_clear_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path, lock_timeout=0.2)
    with store.transaction("web") as txn:
        txn.save(make_state())
        held = threading.Event()
        errors: list[BaseException] = []

        def other() -> None:
            try:
                with store.transaction("web"):
                    pass
            except StateError as exc:
                errors.append(exc)
            held.set()

        thread = threading.Thread(target=other)
        thread.start()
        held.wait(5)
        thread.join()
    assert errors and "locked by another process" in str(errors[0])


def _bump(home: str, n: int) -> None:
    store = StateStore(home)
    for i in range(n):
        with store.transaction("web") as txn:
            state = txn.state
            txn.save(state.record("weight", "ok", f"{multiprocessing.current_process().pid}-{i}"))


def test_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.transaction("web") as txn:
        txn.save(make_state())
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(str(tmp_path), 25)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    state = store.load("web")
    assert state.revision == 1 + 75
    assert len(state.history) == 75
    assert len({h.reason for h in state.history}) == 75


def test_instance_record_validates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port"):
        InstanceRecord(color="blue", version="1", host="h", port=0, backend="p", ref="1",
                       started_at=0)
    with pytest.raises(ValueError, match="recorded under green"):
        replace(make_state(), instances={"green": make_state().instances["blue"]})


def test_remove_deletes_the_directory(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.transaction("web") as txn:
        txn.save(make_state())
    (store.directory("web") / "router").mkdir()
    assert store.names() == ["web"]
    store.remove("web")
    assert not store.directory("web").exists()
    assert store.names() == []


GOLDEN = Path(__file__).parent / "golden"


def test_a_canary_written_before_it_was_typed_reads_as_attributes() -> None:
    """A state file with a finished canary, as written before the canary was typed."""
    data = json.loads((GOLDEN / "state_canary_rolled_back.json").read_text())
    state = DeploymentState.from_dict(data)
    canary = state.canary
    assert isinstance(canary, CanaryState)
    assert (canary.source, canary.prometheus) == ("prometheus", "http://127.0.0.1:9090")
    assert AnalysisSpec.from_dict(canary.spec).steps == (5, "gate", 50, 100)
    status = canary.status
    assert status is not None and status.stage is Phase.ROLLED_BACK and status.done
    assert (status.index, status.weight, status.streaks) == (2, 50, {"error_rate": 2})
    assert status.last[0].rule == "error_rate" and status.last[0].sustained
    assert status.revision == 0 and not canary.active
    # written back with the same keys (the status gains its revision)
    again = state.to_dict()["canary"]
    assert again["status"].pop("revision") == 0
    assert again == data["canary"]


def test_a_canary_not_started_yet_has_its_spec_and_no_status() -> None:
    data = json.loads((GOLDEN / "state_canary_spec_only.json").read_text())
    canary = DeploymentState.from_dict(data).canary
    assert canary is not None and canary.status is None
    assert not canary.started and not canary.active and canary.source == "scrape"
    assert DeploymentState.from_dict(data).to_dict()["canary"] == data["canary"]


def test_lock_is_reentrant_within_a_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    store = StateStore(tmp_path, lock_timeout=0.2)
    with store.lock("web"), store.transaction("web") as txn:  # joins the lock this thread holds
        txn.save(make_state())
        other: list[BaseException] = []

        def elsewhere() -> None:
            try:
                with store.lock("web"):
                    pass
            except StateError as exc:
                other.append(exc)

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        assert other and "locked by another process" in str(other[0])
    with store.lock("web", timeout=0.2):  # released once the outer one ended
        pass


def test_an_instances_serve_options_and_faults_are_saved_and_restarted_as_its_role_allows(
    tmp_path: Path,
) -> None:
    counting = ("--segment-by", "header:x-tenant", "--max-segments", "4")
    faults = ("--fault-error-rate", "0.3")
    green = InstanceRecord(color="green", version="1.1.0", host="127.0.0.1", port=9002,
                           backend="process", ref="99", started_at=2.0, args=counting,
                           faults=faults)
    state = make_state().with_instance(green)
    state = replace(state, rollout=Rollout(phase=Phase.CANARY, stable="blue", weight=20))
    store = StateStore(tmp_path)
    with store.transaction("web") as txn:
        txn.save(state)
    loaded = store.load("web")
    (record,) = loaded.records("green")
    assert (record.args, record.faults) == (counting, faults)
    spec = record.restart_spec(loaded, "token")
    assert spec.serve_args()[-6:] == [*counting, *faults] and spec.admin_token == "token"
    (blue,) = loaded.records("blue")
    assert blue.restart_spec(loaded).faults == ()  # written before options were recorded
    # the candidate promoted, then a new rollout made it stable: its faults stay behind
    promoted = replace(loaded, rollout=Rollout(phase=Phase.PROMOTED, stable="blue", weight=100))
    assert record.restart_spec(promoted).faults == faults  # still the rollout's candidate
    stable = replace(loaded, rollout=Rollout(phase=Phase.STARTING, stable="green"))
    spec = record.restart_spec(stable)
    assert spec.faults == () and spec.extra_args == counting
    rolled_back = replace(loaded, rollout=Rollout(phase=Phase.ROLLED_BACK, stable="blue"))
    assert record.restart_spec(rolled_back).faults == ()
