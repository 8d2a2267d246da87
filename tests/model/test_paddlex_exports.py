"""Real PaddleX/PaddleOCR exports published as is, tuned, re-published with new settings, signed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench import ModelRepository, VersionHub
from workbench.errors import PublishError, SignatureError
from workbench.model import formats, tuning
from workbench.model.manifest import MANIFEST_NAME
from workbench.model.ocr_exports import OcrExports, write_legacy_configs
from workbench.model.runtime_settings import RuntimeSettings
from workbench.model.signing import generate_keypair
from workbench.model.task import Task
from workbench.runtime.device import Device
from workbench.runtime.paddle import PaddlePredictor, PaddleProbe

PROBE = PaddleProbe()
ONEDNN_FAILURE = "ConvertPirAttribute2RuntimeAttribute"


def test_paddlex_export_publishes_as_is_without_a_sample(ocr_exports: OcrExports, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    manifest = repo.publish("ocr-rec", "5.0.0", ocr_exports.v5_rec, probe=PROBE)
    recorded = yaml.safe_load((ocr_exports.v5_rec / "inference.yml").read_text(encoding="utf-8"))

    assert manifest.task is Task.TEXT_RECOGNITION
    assert manifest.codec == {
        "preprocess": recorded["PreProcess"]["transform_ops"],
        "postprocess": recorded["PostProcess"],
    }
    assert len(manifest.codec["postprocess"]["character_dict"]) > 18000
    # signature: batch and width vary between min and max in trt_dynamic_shapes; 3x48 is fixed
    assert [str(s) for s in manifest.inputs] == ["x: float32[?,3,48,?]"]
    assert manifest.outputs[0].shape[:2] == (-1, -1)
    assert manifest.config == "inference.yml"
    assert "inference.yml" in {f.path for f in manifest.files}
    # the generated sample is the opt shape of trt_dynamic_shapes
    assert repo.sample("ocr-rec", "5.0.0")["x"].shape == (1, 3, 48, 320)
    assert manifest.runtime.trt_shapes[0].opt == (1, 3, 48, 320)
    # what was written reads back the same
    assert repo.manifest("ocr-rec", "5.0.0") == manifest


def test_onednn_failure_is_found_and_avoided_by_auto(ocr_exports: OcrExports, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(PublishError, match=f"{ONEDNN_FAILURE}.*--runtime auto"):
        repo.publish("ocr-det", "5.0.0", ocr_exports.v5_det, probe=PROBE)
    assert repo.models() == []  # nothing left behind

    steps: list[tuple[int, int]] = []
    manifest = repo.publish(
        "ocr-det", "5.0.0", ocr_exports.v5_det, probe=PROBE, runtime="auto", tuning_runs=1,
        progress=lambda done, total, trial: steps.append((done, total)),
    )
    # the reference, every trial, and one timing round in each of the two phases
    assert steps[0][0] == 0 and steps[-1][0] == steps[-1][1] == 1 + len(manifest.runtime_trials) + 2
    assert manifest.task is Task.TEXT_DETECTION
    assert manifest.runtime.onednn is False
    dropped = [t for t in manifest.runtime_trials if not t.ok]
    assert dropped and all(t.settings.onednn or t.settings.memory_optim for t in dropped)
    assert all(ONEDNN_FAILURE in t.reason for t in dropped if t.settings.onednn)
    # phase 2 tried memory optimisation on the fastest: Paddle 3.3's CPU build cannot run
    # this PIR program with it, and the tuner records Paddle's sentence
    memory = [t for t in manifest.runtime_trials if t.settings.memory_optim]
    assert len(memory) == 1 and not memory[0].ok and "memory_optimize_pass" in memory[0].reason
    if tuning.usable_threads() > 1:  # and more threads, which run
        assert any((t.settings.cpu_threads or 1) > 1 and t.ok for t in manifest.runtime_trials)
    chosen = [t for t in manifest.runtime_trials if t.settings == manifest.runtime]
    assert chosen[0].ok and chosen[0].p50_ms is not None
    assert min(t.p50_ms or 1e9 for t in manifest.runtime_trials if t.ok) == chosen[0].p50_ms
    assert repo.manifest("ocr-det", "5.0.0").runtime_trials == manifest.runtime_trials

    # the recorded settings are what the model now runs with, in a thread and in a worker process
    sample = repo.sample("ocr-det", "5.0.0")
    for isolation in ("thread", "process"):
        hub = VersionHub(repo, "ocr-det", device="cpu", isolation=isolation)
        try:
            hub.load("5.0.0")
            outputs = hub.predict(sample).outputs
        finally:
            hub.close()
        assert next(iter(outputs.values())).shape == (1, 1, 736, 736)
    predictor = PaddlePredictor.open(
        formats.detect(repo.path("ocr-det", "5.0.0")), Device("cpu"), settings=manifest.runtime
    )
    assert predictor.in_effect["onednn"] is False
    predictor.release()


def test_settings_only_version_is_signed_and_tampering_a_setting_fails(
    ocr_exports: OcrExports, tmp_path: Path
) -> None:
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    generate_keypair(private, public)
    repo = ModelRepository(tmp_path / "repo")
    base = repo.publish("ocr-rec", "5.0.0", ocr_exports.v5_rec, probe=PROBE, signing_key=private)
    assert base.runtime.onednn is None  # Paddle's defaults

    new = repo.publish_settings(
        "ocr-rec", "5.0.1", "5.0.0", RuntimeSettings.parse("onednn=off,threads=2"),
        probe=PROBE, signing_key=private,
    )
    assert (new.runtime.onednn, new.runtime.cpu_threads) == (False, 2)
    assert new.runtime.trt_shapes == base.runtime.trt_shapes
    assert {f.path: f.sha256 for f in new.files} == {f.path: f.sha256 for f in base.files}
    assert (new.task, new.codec, new.inputs) == (base.task, base.codec, base.inputs)
    repo.verify("ocr-rec", "5.0.1", public_key=public)

    path = repo.path("ocr-rec", "5.0.1")
    data = json.loads((path / MANIFEST_NAME).read_text())
    data["runtime"]["onednn"] = True
    (path / MANIFEST_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    with pytest.raises(SignatureError, match=MANIFEST_NAME):
        repo.verify("ocr-rec", "5.0.1", public_key=public)


def test_legacy_export_needs_a_sample_or_a_config(ocr_exports: OcrExports, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(PublishError, match=r"neither a sample input nor an inference\.yml.*--config"):
        repo.publish("ocr-det", "4.0.0", ocr_exports.v4_det, probe=PROBE)
    with pytest.raises(PublishError, match="does not exist"):
        repo.publish("ocr-det", "4.0.0", ocr_exports.v4_det, probe=PROBE, config=tmp_path / "none.yml")
    with_yaml = tmp_path / "with-yaml"
    shutil.copytree(ocr_exports.v5_rec, with_yaml)
    configs = write_legacy_configs(ocr_exports, tmp_path / "configs")
    with pytest.raises(PublishError, match="already has an inference.yml"):
        repo.publish("ocr-rec", "5.0.0", with_yaml, probe=PROBE, config=configs["rec"])
    assert repo.models() == []


def test_legacy_exports_publish_with_a_paddlex_style_config(ocr_exports: OcrExports, tmp_path: Path) -> None:
    configs = write_legacy_configs(ocr_exports, tmp_path / "configs")
    repo = ModelRepository(tmp_path / "repo")
    det = repo.publish("ocr-det", "4.0.0", ocr_exports.v4_det, probe=PROBE, config=configs["det"])
    rec = repo.publish("ocr-rec", "4.0.0", ocr_exports.v4_rec, probe=PROBE, config=configs["rec"])
    cls = repo.publish("ocr-cls", "2.0.0", ocr_exports.v2_cls, probe=PROBE, config=configs["cls"])

    assert (det.format, det.task, rec.task, cls.task) == (
        "pdmodel", Task.TEXT_DETECTION, Task.TEXT_RECOGNITION, Task.CLASSIFICATION,
    )
    keys = ocr_exports.rec_keys.read_text(encoding="utf-8").splitlines()
    assert rec.codec is not None and rec.codec["postprocess"]["character_dict"] == keys
    # rapidocr's values, in PaddleX's layout
    assert det.codec is not None and det.codec["postprocess"]["unclip_ratio"] == 1.6
    assert cls.codec is not None and cls.codec["postprocess"]["Topk"]["label_list"] == ["0", "180"]
    assert [str(s) for s in cls.inputs] == ["x: float32[?,3,48,192]"]
    # the config is copied in as inference.yml and hashed with the version
    assert (repo.path("ocr-rec", "4.0.0") / "inference.yml").read_bytes() == configs["rec"].read_bytes()
    repo.verify("ocr-rec", "4.0.0")
    # the v4 recogniser's classes are its dictionary plus blank and space
    assert rec.outputs[0].shape[-1] == len(keys) + 2
    sample = repo.sample("ocr-cls", "2.0.0")["x"]
    scores = PROBE.measure(formats.detect(repo.path("ocr-cls", "2.0.0")), {"x": sample}, cls.runtime).outputs
    assert np.allclose(next(iter(scores.values())).sum(axis=-1), 1.0, atol=1e-4)
