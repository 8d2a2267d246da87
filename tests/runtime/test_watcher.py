"""The polling watcher follows ``latest`` into the hub, and survives a broken version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import psutil

from tests._wait import wait_until
from workbench import ModelRepository, RepositoryWatcher, VersionHub
from workbench.model.manifest import MANIFEST_NAME
from workbench.model.signing import generate_keypair
from workbench.runtime.paddle import PaddleProbe

PROBE = PaddleProbe()  # publishing runs each sample once to describe the outputs


def _export(repo: Path, version: str, target: Path) -> Path:
    target.mkdir(parents=True)
    for name in ("inference.json", "inference.pdiparams"):
        shutil.copy(repo / "digits" / version / name, target / name)
    return target


def test_watcher_swaps_in_new_versions_and_reports_failures(repo_copy: Path, tmp_path: Path) -> None:
    repo = ModelRepository(repo_copy)
    hub = VersionHub(repo, "digits", device="cpu")
    hub.load("1.2.0")
    watcher = RepositoryWatcher(hub, interval=0.1, follow="latest")
    assert watcher.poll() == []
    sample = {"x": np.zeros((2, 64), np.float32)}
    repo.publish("digits", "1.3.0", _export(repo_copy, "1.1.0", tmp_path / "a"), sample=sample, probe=PROBE)
    events = watcher.poll()
    assert [(e.kind, e.version) for e in events] == [("discovered", "1.3.0"), ("swapped", "1.3.0")]
    assert str(hub.active.version) == "1.3.0"

    broken = _export(repo_copy, "1.1.0", tmp_path / "b")
    repo.publish("digits", "1.4.0", broken, sample=sample, probe=PROBE)
    params = repo_copy / "digits" / "1.4.0" / "inference.pdiparams"
    params.write_bytes(params.read_bytes()[:-8])  # truncated after publishing
    events = watcher.poll()
    assert [e.kind for e in events] == ["discovered", "load_failed"]
    assert "inference.pdiparams" in events[-1].message
    assert str(hub.active.version) == "1.3.0"
    assert watcher.poll() == []  # not retried until something changes
    hub.close()


def test_watcher_follows_an_alias_in_the_background(repo_copy: Path) -> None:
    import time

    repo = ModelRepository(repo_copy)
    hub = VersionHub(repo, "digits", device="cpu")
    hub.load("stable")
    with RepositoryWatcher(hub, interval=0.05, follow="stable"):
        repo.set_alias("digits", "stable", "1.1.0")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and str(hub.active.version) != "1.1.0":
            time.sleep(0.05)
    assert str(hub.active.version) == "1.1.0"
    assert str(hub.history[-1]) == "1.0.0"
    hub.close()


def _swapped_in(hub: VersionHub, watcher: RepositoryWatcher, version: str) -> bool:
    return hub.active is not None and str(hub.active.version) == version


def _refused(watcher: RepositoryWatcher, version: str) -> bool:
    return any(e.kind == "load_failed" and e.version == version for e in watcher.events)


def test_watcher_retries_a_refused_version_once_it_is_signed(repo_copy: Path, tmp_path: Path) -> None:
    private, public = tmp_path / "sign.pem", tmp_path / "sign.pub"
    generate_keypair(private, public)
    repo = ModelRepository(repo_copy, verify_key=public)
    repo.sign("digits", "1.2.0", private)
    hub = VersionHub(repo, "digits", device="cpu")
    hub.load("1.2.0")
    sample = {"x": np.zeros((2, 64), np.float32)}
    with RepositoryWatcher(hub, interval=0.05, follow="latest") as watcher:
        repo.publish("digits", "1.3.0", _export(repo_copy, "1.1.0", tmp_path / "a"), sample=sample, probe=PROBE)
        wait_until(lambda: _refused(watcher, "1.3.0"), timeout=30, what="1.3.0 refused (unsigned)")
        assert str(hub.active.version) == "1.2.0"
        repo.sign("digits", "1.3.0", private)  # adds model.sig; the manifest is unchanged
        wait_until(lambda: _swapped_in(hub, watcher, "1.3.0"), timeout=30, what="1.3.0 swapped in")
    assert [e.kind for e in watcher.events if e.version == "1.3.0"][-1] == "swapped"
    hub.close()


def test_watcher_retries_a_version_whose_copy_completes(repo_copy: Path) -> None:
    repo = ModelRepository(repo_copy)
    hub = VersionHub(repo, "digits", device="cpu")
    hub.load("1.2.0")
    source, target = repo_copy / "digits" / "1.1.0", repo_copy / "digits" / "1.5.0"
    # a plain `cp -r` seen half-way: manifest and program there, the weights cut short
    # (staged under a hidden name, so the watcher sees only this state before the fix)
    staged = repo_copy / "digits" / ".incoming"
    shutil.copytree(source, staged, ignore=shutil.ignore_patterns("inference.pdiparams"))
    manifest = json.loads((staged / MANIFEST_NAME).read_text())
    manifest["version"] = "1.5.0"
    (staged / MANIFEST_NAME).write_text(json.dumps(manifest))
    params = (source / "inference.pdiparams").read_bytes()
    (staged / "inference.pdiparams").write_bytes(params[: len(params) // 2])
    with RepositoryWatcher(hub, interval=0.05, follow="latest") as watcher:
        staged.rename(target)
        wait_until(lambda: _refused(watcher, "1.5.0"), timeout=30, what="1.5.0 refused (half copied)")
        assert str(hub.active.version) == "1.2.0"
        (target / "inference.pdiparams").write_bytes(params)  # the copy completes
        wait_until(lambda: _swapped_in(hub, watcher, "1.5.0"), timeout=30, what="1.5.0 swapped in")
    hub.close()


def test_watcher_over_worker_processes_swaps_in_and_survives_a_version_paddle_cannot_load(
    repo_copy: Path, tmp_path: Path
) -> None:
    repo = ModelRepository(repo_copy)
    hub = VersionHub(repo, "digits", device="cpu", isolation="process")
    try:
        old_pids = hub.load("1.2.0").worker_pids
        sample = {"x": np.zeros((2, 64), np.float32)}
        with RepositoryWatcher(hub, interval=0.1, follow="latest", unload_previous=True) as watcher:
            repo.publish("digits", "1.3.0", _export(repo_copy, "1.1.0", tmp_path / "a"), sample=sample, probe=PROBE)
            wait_until(lambda: _swapped_in(hub, watcher, "1.3.0"), timeout=120, what="1.3.0 swapped in")
            assert hub.active.isolation == "process" and hub.active.worker_pids
            wait_until(lambda: not any(psutil.pid_exists(pid) for pid in old_pids), timeout=30,
                       what="1.2.0's worker stopped (unload_previous)")
            # hashes and signature in order, but the weights are not Paddle's: the worker fails to load
            signature = repo.manifest("digits", "1.1.0")
            broken = _export(repo_copy, "1.1.0", tmp_path / "b")
            (broken / "inference.pdiparams").write_bytes(b"not paddle parameters" * 10)
            repo.publish("digits", "1.4.0", broken, inputs=signature.inputs, outputs=signature.outputs)
            wait_until(lambda: _refused(watcher, "1.4.0"), timeout=120, what="1.4.0 refused")
        assert str(hub.active.version) == "1.3.0"
        assert str(hub.predict(sample).version) == "1.3.0"
        assert "1.4.0" not in hub
    finally:
        hub.close()
