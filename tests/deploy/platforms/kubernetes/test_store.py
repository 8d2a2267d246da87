"""Deployment state in a ConfigMap (ClusterStateStore) against the in-memory API emulator."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.deploy.test_state import make_state
from workbench.deploy.platforms.kubernetes.client import KubeApi
from workbench.deploy.platforms.kubernetes.store import ClusterStateStore
from workbench.errors import StateCorruptError, StateError

if TYPE_CHECKING:
    from tests.deploy.platforms.kubernetes.emulator import Emulator


def _store(kubeconfig: Path, home: Path, **kw: float) -> ClusterStateStore:
    return ClusterStateStore(KubeApi.connect(config_file=str(kubeconfig), timeout=5.0), home, **kw)  # type: ignore[arg-type]


def test_state_round_trips_through_a_configmap(kubeconfig: Path, tmp_path: Path,
                                               emulator: Emulator) -> None:
    store = _store(kubeconfig, tmp_path)
    with store.transaction("web") as txn:
        assert not txn.exists
        saved = txn.save(make_state().record("create", "ok", "blue live"))
    assert store.exists("web") and store.names() == ["web"]
    assert store.load("web") == saved
    cm = emulator.obj("configmaps", "wb-web-state")
    assert cm is not None and cm["metadata"]["labels"]["workbench.paddle.dev/deployment"] == "web"
    with store.transaction("web") as txn:
        txn.save(txn.state.record("promote"))
    # a second machine (another store, another client) reads the same truth and the previous one
    other = _store(kubeconfig, tmp_path / "other")
    assert other.load("web").revision == 2
    previous = other.load_previous("web")
    assert previous is not None and previous.revision == 1


def test_a_write_over_a_change_made_meanwhile_fails_clearly(kubeconfig: Path, tmp_path: Path,
                                                           api: KubeApi) -> None:
    store = _store(kubeconfig, tmp_path)
    with store.transaction("web") as txn:
        txn.save(make_state())
    with pytest.raises(StateError, match="changed by another process or machine since this one "
                                         "read it; nothing was written"), store.transaction("web") as txn:
        # someone without the lease (kubectl edit) changes it between our read and write
        api.patch("v1", "ConfigMap", "wb-web-state", {"metadata": {"annotations": {"x": "1"}}})
        txn.save(replace(txn.state, port=9999))
    assert store.load("web").port == 8080
    # read again and the write goes through
    with store.transaction("web") as txn:
        txn.save(replace(txn.state, port=9999))
    assert store.load("web").port == 9999


def test_the_lease_serialises_two_machines(kubeconfig: Path, tmp_path: Path) -> None:
    first, second = _store(kubeconfig, tmp_path / "a"), _store(kubeconfig, tmp_path / "b")
    with first.transaction("web") as txn:
        txn.save(make_state())
    order: list[str] = []
    held = threading.Event()

    def hold() -> None:
        with first.lock("web"):
            held.set()
            time.sleep(0.6)
            order.append("first done")

    worker = threading.Thread(target=hold)
    worker.start()
    held.wait(5)
    with pytest.raises(StateError, match=r"deployment 'web' is locked by .*Lease ml/wb-web-lock"), \
            second.lock("web", timeout=0.2):
        pass
    with second.transaction("web", timeout=10) as txn:
        order.append("second in")
        txn.save(txn.state.record("switch"))
    worker.join()
    assert order == ["first done", "second in"]


def test_an_expired_lease_is_taken_over(kubeconfig: Path, tmp_path: Path, api: KubeApi) -> None:
    store = _store(kubeconfig, tmp_path)
    api.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "wb-web-lock"},
                "spec": {"holderIdentity": "crashed@gone:1", "leaseDurationSeconds": 5,
                         "renewTime": "2020-01-01T00:00:00.000000Z"}})
    with store.lock("web", timeout=1):
        lease = api.get("coordination.k8s.io/v1", "Lease", "wb-web-lock") or {}
        assert lease["spec"]["holderIdentity"] != "crashed@gone:1"
    assert (api.get("coordination.k8s.io/v1", "Lease", "wb-web-lock") or {})["spec"]["holderIdentity"] == ""


def test_admin_token_lives_in_a_secret_shared_by_machines(kubeconfig: Path, tmp_path: Path) -> None:
    first, second = _store(kubeconfig, tmp_path / "a"), _store(kubeconfig, tmp_path / "b")
    token = first.admin_token("web")
    assert len(token) > 20 and second.admin_token("web") == token
    assert "token" not in json.dumps(make_state().to_dict())


def test_unreadable_state_is_corrupt_and_recoverable(kubeconfig: Path, tmp_path: Path,
                                                     api: KubeApi) -> None:
    store = _store(kubeconfig, tmp_path)
    for _ in range(2):
        with store.transaction("web") as txn:
            txn.save(make_state() if not txn.exists else txn.state.record("x"))
    api.patch("v1", "ConfigMap", "wb-web-state", {"data": {"state.json": "{broken"}})
    with pytest.raises(StateCorruptError, match="ConfigMap ml/wb-web-state"):
        store.load("web")
    with store.lock("web"):
        assert store.recover("web").revision == 1
    assert store.load("web").revision == 1


def test_remove_deletes_the_cluster_objects(kubeconfig: Path, tmp_path: Path, emulator: Emulator) -> None:
    store = _store(kubeconfig, tmp_path)
    with store.transaction("web") as txn:
        txn.save(make_state())
    store.admin_token("web")
    store.remove("web")
    assert not store.exists("web") and store.names() == []
    assert emulator.obj("secrets", "wb-web-admin") is None
    assert emulator.obj("leases", "wb-web-lock") is None


def test_a_forbidden_read_is_a_state_error(kubeconfig: Path, tmp_path: Path, emulator: Emulator) -> None:
    store = _store(kubeconfig, tmp_path)
    emulator.fail("GET", "/configmaps/wb-web-state$", 403, 'configmaps "wb-web-state" is forbidden')
    with pytest.raises(StateError, match="refused to read ConfigMap ml/wb-web-state: forbidden"):
        store.load("web")
