"""Pipeline versions in the hub, on real Paddle predictors: loaded with their stages,
switched and rolled back as one version, unloaded with their stages, refused whole when
a stage changed. The digits model plays both stages: the hub does not read images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from workbench import InputError, IntegrityError, ModelRepository, VersionHub
from workbench.model.runtime_settings import RuntimeSettings
from workbench.runtime.pipeline import STAGE_WARMUP, LoadedPipeline
from workbench.runtime.watcher import RepositoryWatcher

if TYPE_CHECKING:
    from workbench.runtime.hub import HubEvent


@pytest.fixture
def repo(repo_copy: Path) -> ModelRepository:
    repo = ModelRepository(repo_copy)
    repo.publish_settings("digits", "1.3.0", "1.1.0", RuntimeSettings.parse("onednn=off,threads=1"))
    repo.publish_pipeline("ocr", "1.0.0", {"det": "digits:1.0.0", "rec": "digits:1.3.0"})
    repo.publish_pipeline("ocr", "2.0.0", {"det": "digits:1.1.0", "cls": "digits:1.0.0", "rec": "digits:1.2.0"})
    return repo


def test_a_pipeline_loads_its_stages_and_switches_as_one_version(repo: ModelRepository) -> None:
    events: list[HubEvent] = []
    with VersionHub(repo, "ocr", device="cpu", isolation="thread") as hub:
        hub.subscribe(events.append)
        first = hub.load("1.0.0")
        second = hub.load("2.0.0")
        assert isinstance(first, LoadedPipeline) and isinstance(second, LoadedPipeline)
        assert {role: (lv.model, str(lv.version)) for role, lv in first.stages.items()} == {
            "det": ("digits", "1.0.0"), "rec": ("digits", "1.3.0")}
        assert list(second.stages) == ["det", "cls", "rec"]
        rec = first.stages["rec"]
        assert rec.manifest.runtime.onednn is False  # each stage with its own manifest's settings
        assert rec.warmup_batch_sizes == STAGE_WARMUP["rec"]
        assert all(lv.state.value == "ready" for lv in first.stages.values())

        predict = first.stage_predict("rec")
        assert predict is not None and first.stage_predict("cls") is None
        rows = np.zeros((2, 64), np.float32)
        assert np.array_equal(predict(rows), rec.predict({"x": rows})[rec.outputs[0].name])
        with pytest.raises(InputError, match="is an OCR pipeline: send encoded images"):
            hub.predict({"x": rows})

        assert str(hub.active.version) == "1.0.0"
        hub.use("2.0.0")
        assert hub.active is second
        assert hub.rollback() is first
        stages = list(second.stages.values())
        hub.unload("2.0.0")
        assert second.state.value == "unloaded" and not second.stages
        # its det and rec went with it; its cls (digits:1.0.0) is 1.0.0's det and stays
        assert [lv.state.value for lv in stages] == ["unloaded", "ready", "unloaded"]
    kinds = [(e.kind, e.version) for e in events]
    assert ("activated", "2.0.0") in kinds and ("rolled_back", "1.0.0") in kinds
    assert ("unloaded", "2.0.0") in kinds


def test_a_stage_named_by_two_pipelines_is_loaded_once_and_stays_while_one_uses_it(
    repo: ModelRepository,
) -> None:
    repo.publish_pipeline("ocr", "3.0.0", {"det": "digits:1.0.0", "rec": "digits:1.2.0"})
    with VersionHub(repo, "ocr", device="cpu", isolation="thread") as hub:
        first = hub.load("1.0.0")
        third = hub.load("3.0.0")
        assert isinstance(first, LoadedPipeline) and isinstance(third, LoadedPipeline)
        shared = first.stages["det"]
        assert third.stages["det"] is shared  # one loaded version, not two
        assert hub.stages.loads == 3  # digits 1.0.0, 1.3.0, 1.2.0
        assert hub.stages.holders("digits:1.0.0") == 2
        hub.use("3.0.0")
        hub.unload("1.0.0")
        assert shared.state.value == "ready" and hub.stages.holders("digits:1.0.0") == 1
        assert first.state.value == "unloaded"
        predict = third.stage_predict("det")
        assert predict is not None and predict(np.zeros((1, 64), np.float32)).shape[0] == 1
        hub.load("1.0.0")  # back: the shared stage is counted again, not loaded again
        assert hub.get("1.0.0").stages["det"] is shared and hub.stages.loads == 4  # 1.3.0 again
    assert shared.state.value == "unloaded" and hub.stages.holders("digits:1.0.0") == 0


def test_a_pipeline_whose_stage_changed_is_refused_and_the_active_one_stays(repo: ModelRepository) -> None:
    repo.publish_pipeline("ocr", "3.0.0", {"det": "digits:1.0.0", "rec": "digits:1.2.0"})
    manifest = repo.path("digits", "1.2.0") / "workbench.json"
    data = json.loads(manifest.read_text())
    data["notes"] = "changed after the pipeline pinned it"
    manifest.write_text(json.dumps(data))
    events: list[HubEvent] = []
    with VersionHub(repo, "ocr", device="cpu", isolation="thread") as hub:
        hub.subscribe(events.append)
        hub.load("1.0.0")
        with pytest.raises(IntegrityError, match="the manifest of its rec stage digits:1.2.0 has changed"):
            hub.load("3.0.0")
        assert str(hub.active.version) == "1.0.0"
        assert [str(lv.version) for lv in hub.loaded] == ["1.0.0"]
    assert any(e.kind == "load_failed" and e.version == "3.0.0" for e in events)


def test_the_watcher_swaps_in_a_new_pipeline_version(repo: ModelRepository) -> None:
    with VersionHub(repo, "ocr", device="cpu", isolation="thread") as hub:
        hub.load("2.0.0")
        watcher = RepositoryWatcher(hub, interval=0.1, follow="latest")
        assert watcher.poll() == []
        repo.publish_pipeline("ocr", "2.1.0", {"det": "digits:1.2.0", "rec": "digits:1.3.0"})
        events = watcher.poll()
        assert [(e.kind, e.version) for e in events] == [("discovered", "2.1.0"), ("swapped", "2.1.0")]
        active = hub.active
        assert isinstance(active, LoadedPipeline) and str(active.version) == "2.1.0"
        assert [str(lv.version) for lv in active.stages.values()] == ["1.2.0", "1.3.0"]
