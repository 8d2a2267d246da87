"""The polling watcher follows ``latest`` into the hub, and survives a broken version."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from workbench import ModelRepository, RepositoryWatcher, VersionHub


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
    repo.publish("digits", "1.3.0", _export(repo_copy, "1.1.0", tmp_path / "a"), sample=sample)
    events = watcher.poll()
    assert [(e.kind, e.version) for e in events] == [("discovered", "1.3.0"), ("swapped", "1.3.0")]
    assert str(hub.active.version) == "1.3.0"

    broken = _export(repo_copy, "1.1.0", tmp_path / "b")
    repo.publish("digits", "1.4.0", broken, sample=sample)
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
