"""Runtime settings as data (text form, manifest form) and the auto-tuner's choice (fake probe)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import ModelLoadError, PublishError
from workbench.model import tuning
from workbench.model.formats import ModelFiles
from workbench.model.manifest import Manifest, TensorSpec
from workbench.model.runtime_settings import RuntimeSettings, RuntimeTrial, SettingsError, ShapeRange
from workbench.model.task import Task
from workbench.model.tuning import disagreement_with, tune, tuning_steps


def test_text_form_round_trips_and_names_only_what_is_set() -> None:
    settings = RuntimeSettings.parse(" onednn=off, ir_optim=ON ,threads=2,delete_pass=a+b_c,memory_optim=no")
    assert settings == RuntimeSettings(
        onednn=False, ir_optim=True, memory_optim=False, cpu_threads=2, delete_passes=("a", "b_c")
    )
    assert settings.describe() == "onednn=off,ir_optim=on,memory_optim=off,threads=2,delete_pass=a+b_c"
    assert RuntimeSettings.parse(settings.describe()) == settings
    assert RuntimeSettings.parse("").describe() == "default"
    gpu = RuntimeSettings.parse("precision=fp16,tensorrt=on")
    assert (gpu.precision, gpu.tensorrt) == ("fp16", True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("onednn=maybe", "runtime setting onednn is on or off, not 'maybe'"),
        ("speed=fast", "unknown runtime setting 'speed'; known settings: onednn, ir_optim"),
        ("threads=0", "threads must be a positive integer, not '0'"),
        ("threads=two", "threads must be a positive integer, not 'two'"),
        ("onednn", "runtime setting 'onednn' needs the form key=value"),
        ("onednn=on,onednn=off", "runtime setting 'onednn' is given twice"),
        ("precision=fp8", "precision must be one of fp32, fp16, bf16, not 'fp8'"),
        ("delete_pass=a b", "pass names are letters, digits and underscores"),
    ],
)
def test_bad_settings_say_what_is_wrong_in_one_sentence(text: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        RuntimeSettings.parse(text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_shape_ranges_are_checked() -> None:
    with pytest.raises(SettingsError, match="min <= opt <= max"):
        ShapeRange("x", (1, 3, 64), (1, 3, 32), (1, 3, 128))
    with pytest.raises(SettingsError, match="rank"):
        ShapeRange.from_lists("x", [[1, 3], [1, 3, 4], [1, 3, 4]])


def _manifest(**fields: object) -> Manifest:
    return Manifest(
        "m", "1.0.0", "pir", (), (TensorSpec("x", "float32", (-1, 3)),), (), "2026-12-06T00:00:00+00:00",
        **fields,  # type: ignore[arg-type]
    )


def test_manifest_round_trips_runtime_task_and_codec() -> None:
    settings = RuntimeSettings(
        onednn=False, cpu_threads=2, trt_shapes=(ShapeRange("x", (1, 3), (2, 3), (8, 3)),)
    )
    manifest = _manifest(
        task=Task.TEXT_RECOGNITION,
        codec={"preprocess": [{"DecodeImage": {"img_mode": "BGR"}}], "postprocess": {"name": "CTCLabelDecode"}},
        runtime=settings,
        runtime_trials=(RuntimeTrial(settings, True, 1.25), RuntimeTrial(RuntimeSettings(), False, None, "boom")),
        config="inference.yml",
    )
    data = json.loads(manifest.to_json())
    assert data["task"] == "text-recognition"
    assert data["runtime"]["onednn"] is False
    assert data["runtime"]["trt_shapes"] == {"x": [[1, 3], [2, 3], [8, 3]]}
    assert Manifest.from_dict(data) == manifest


def test_manifests_without_settings_load_with_paddles_defaults(tmp_path: Path) -> None:
    data = json.loads(_manifest().to_json())
    for key in ("task", "codec", "runtime", "runtime_trials", "config"):
        data.pop(key)
    old = Manifest.from_dict(data)
    assert old.runtime == RuntimeSettings() and old.runtime.is_default
    assert (old.task, old.codec, old.runtime_trials) == (Task.GENERIC, None, ())


class FakeSession:
    def __init__(self, outputs: dict[str, np.ndarray], seconds: float, log: list[str]) -> None:
        self.outputs, self.seconds, self.log, self.in_effect = outputs, seconds, log, {}

    def run(self, inputs: object) -> dict[str, np.ndarray]:
        self.log.append("run")
        time.sleep(self.seconds)
        return self.outputs

    def close(self) -> None:
        self.log.append("close")


class FakeProbe:
    """Outputs and timings by settings, for the tuner's pure logic."""

    def __init__(self) -> None:
        self.seen: list[RuntimeSettings] = []
        self.log: list[str] = []

    def open(self, files: ModelFiles, settings: RuntimeSettings) -> FakeSession:
        self.seen.append(settings)
        if settings.onednn and settings.ir_optim:
            raise ModelLoadError("Paddle could not load m: (Unimplemented) not supported")
        out = np.ones((1, 4), np.float32)
        if settings.onednn and not settings.ir_optim:
            return FakeSession({"y": out + 0.5}, 0.0, self.log)  # wrong answers, very fast
        seconds = self.fast if settings.ir_optim else self.slow
        if settings.memory_optim:
            seconds *= self.memory_factor
        if settings.cpu_threads and settings.cpu_threads > 1:
            seconds *= self.threads_factor
        return FakeSession({"y": out + 1e-6}, seconds, self.log)

    fast, slow = 0.002, 0.02
    memory_factor = 1.0
    threads_factor = 1.0


def test_tune_drops_failures_and_disagreements_and_keeps_the_fastest() -> None:
    probe = FakeProbe()
    probe.memory_factor = 3.0  # memory optimisation slows this model down
    files = ModelFiles("pir", Path("m.json"), Path("m.pdiparams"))
    steps: list[tuple[int, int]] = []
    result = tune(
        probe, files, {"x": np.zeros((1, 3), np.float32)}, base=RuntimeSettings(cpu_threads=2), runs=3,
        progress=lambda done, total, trial: steps.append((done, total)),
    )
    assert probe.seen[0] == RuntimeSettings(onednn=False, ir_optim=False, cpu_threads=2)  # the reference
    assert result.chosen == RuntimeSettings(onednn=False, ir_optim=True, cpu_threads=2)
    by = {t.settings.describe(): t for t in result.trials}
    assert list(by) == [
        "onednn=on,ir_optim=on,threads=2", "onednn=on,ir_optim=off,threads=2",
        "onednn=off,ir_optim=on,threads=2", "onednn=off,ir_optim=off,threads=2",
        # the fastest's neighbour; the threads are fixed by the user, so not varied
        "onednn=off,ir_optim=on,memory_optim=on,threads=2",
    ]
    assert not by["onednn=on,ir_optim=on,threads=2"].ok
    assert "Unimplemented" in by["onednn=on,ir_optim=on,threads=2"].reason
    assert "differs from the reference by up to 0.5" in by["onednn=on,ir_optim=off,threads=2"].reason
    assert 2.0 <= (by["onednn=off,ir_optim=on,threads=2"].p50_ms or 0) < 6.0
    assert (by["onednn=off,ir_optim=on,memory_optim=on,threads=2"].p50_ms or 0) >= 6.0
    assert (by["onednn=off,ir_optim=off,threads=2"].p50_ms or 0) >= 20.0
    assert probe.log[-1] == "close"
    # every session opened is closed: the reference, three kept and the one that disagreed
    assert probe.log.count("close") == 5
    assert steps[0] == (0, 12) and steps[-1] == (12, 12)
    assert [done for done, _ in steps] == list(range(13))
    assert len(tuning_steps(RuntimeSettings(cpu_threads=2), runs=3)) == 12


def test_tune_tries_memory_optimisation_and_threads_on_the_fastest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Phase 2 loads the fastest's neighbours beside phase 1's survivors and times them
    all again together: the choice and every recorded figure come from one window."""
    monkeypatch.setattr(tuning, "usable_threads", lambda: 2)
    probe = FakeProbe()
    probe.fast, probe.slow = 0.02, 0.06  # 20 ms, a neighbour 2 ms or 10 ms: apart even under load
    probe.memory_factor, probe.threads_factor = 0.1, 0.5
    files = ModelFiles("pir", Path("m.json"), Path("m.pdiparams"))
    result = tune(probe, files, {"x": np.zeros((1, 3), np.float32)}, runs=3)
    by = {t.settings.describe(): t for t in result.trials}
    assert set(by) >= {"onednn=off,ir_optim=on,memory_optim=on", "onednn=off,ir_optim=on,threads=2"}
    assert result.chosen == RuntimeSettings(onednn=False, ir_optim=True, memory_optim=True)
    chosen = by[result.chosen.describe()]
    assert chosen.p50_ms == min(t.p50_ms for t in result.trials if t.ok and t.p50_ms is not None)
    assert len(result.trials) == 6 and probe.log.count("close") == 6
    # what the user fixed is never varied
    fixed = tune(
        FakeProbe(), files, {"x": np.zeros((1, 3), np.float32)},
        base=RuntimeSettings(memory_optim=False, cpu_threads=1), runs=2,
    )
    assert {t.settings.memory_optim for t in fixed.trials} == {False}
    assert {t.settings.cpu_threads for t in fixed.trials} == {1}
    assert len(fixed.trials) == 4


def test_tune_fails_when_nothing_runs() -> None:
    class Broken:
        def open(self, *args: object, **kwargs: object) -> FakeSession:
            raise ModelLoadError("Paddle could not load m: bad program")

    files = ModelFiles("pir", Path("m.json"), Path("m.pdiparams"))
    with pytest.raises(PublishError, match="does not run even with oneDNN and IR optimisation off: .*bad program"):
        tune(Broken(), files, {"x": np.zeros(1)})


def test_disagreement_names_shape_and_missing_outputs() -> None:
    want = {"y": np.zeros((1, 4), np.float32)}
    assert disagreement_with(want, {"y": np.zeros((1, 4), np.float32)}) == ""
    assert "shape (1, 5)" in disagreement_with(want, {"y": np.zeros((1, 5), np.float32)})
    assert "missing" in disagreement_with(want, {})
    assert "not finite" in disagreement_with(want, {"y": np.full((1, 4), np.nan, np.float32)})


def test_memory_optimisation_is_kept_when_it_costs_little_speed() -> None:
    """Without it Paddle holds every intermediate tensor at once: memory that grows with
    the input's size. Within 10% of the fastest it is chosen; beyond, speed wins."""
    from workbench.model.runtime_settings import RuntimeTrial

    def trial(p50: float, **settings: object) -> RuntimeTrial:
        return RuntimeTrial(RuntimeSettings(onednn=False, ir_optim=True, **settings), True, p50)  # type: ignore[arg-type]

    fastest, lean, threads = trial(100.0), trial(108.0, memory_optim=True), trial(101.0, cpu_threads=2)
    assert tuning.choose([fastest, lean, threads]) is lean
    slow_lean = trial(115.0, memory_optim=True)
    assert tuning.choose([fastest, slow_lean, threads]) is fastest
    assert tuning.choose([slow_lean]) is slow_lean
