"""The version hub with real Paddle predictors: swap under load, rollback, unload drain."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.runtime._swap import swap_under_load
from workbench import HubError, InputError, IntegrityError, ModelRepository, VersionHub
from workbench.errors import VersionNotLoadedError
from workbench.model.demo import digits_dataset

OUTPUT = "probabilities"


@pytest.fixture(scope="module")
def hub(demo_repo: Path) -> VersionHub:
    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu", workers=2)
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        hub.load(version)
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return digits_dataset()[2][:16]


def test_first_load_is_active_and_others_wait(hub: VersionHub) -> None:
    hub.use("1.0.0")
    assert str(hub.active.version) == "1.0.0"
    assert [str(lv.version) for lv in hub.loaded] == ["1.0.0", "1.1.0", "1.2.0"]
    assert all(lv.state.value == "ready" for lv in hub.loaded)


def test_predict_validates_inputs_with_clear_errors(hub: VersionHub, rows: np.ndarray) -> None:
    assert hub.predict({"x": rows}).outputs[OUTPUT].shape == (16, 10)
    assert hub.predict({"x": rows.astype(np.float64)}).outputs[OUTPUT].dtype == np.float32
    cases = {
        "missing input 'x'": {},
        "unknown input 'y'": {"x": rows, "y": rows},
        "dimension 1 is 10, expected 64": {"x": rows[:, :10]},
        "rank 1": {"x": rows[0]},
        "dtype <U1": {"x": np.array([["a"] * 64])},
        "NaN": {"x": np.full((1, 64), np.nan, np.float32)},
        "empty batch": {"x": rows[:0]},
    }
    for message, inputs in cases.items():
        with pytest.raises(InputError, match=message):
            hub.predict(inputs)


def test_swap_under_concurrent_load_loses_nothing(hub: VersionHub, rows: np.ndarray) -> None:
    hub.use("1.0.0")
    run = swap_under_load(hub, rows, ["1.1.0", "1.2.0", "1.0.0", "1.1.0", "1.0.0"], threads=8, pause=0.05)
    assert run.failures == []
    assert run.mismatched == []
    assert set(run.served) == {"1.0.0", "1.1.0", "1.2.0"}
    assert str(hub.active.version) == "1.0.0"


def test_rollback_walks_the_history(hub: VersionHub) -> None:
    hub.use("1.0.0")
    hub.use("1.1.0")
    hub.use("1.2.0")
    assert str(hub.rollback().version) == "1.1.0"
    assert str(hub.rollback().version) == "1.0.0"
    assert str(hub.active.version) == "1.0.0"


def test_use_and_rollback_prime_every_predictor_before_the_switch(hub: VersionHub) -> None:
    """A loaded version goes cold while it waits; the switch runs a few batches on it first."""
    hub.use("1.0.0")
    target = hub.get("1.2.0")
    served = target.stats()["served"]
    primed_when_active: list[int] = []
    unsubscribe = hub.subscribe(
        lambda event: primed_when_active.append(target.primed) if event.kind == "activated" else None
    )
    before = target.primed
    hub.use("1.2.0")
    unsubscribe()
    assert primed_when_active and primed_when_active[0] >= before + hub.workers  # each clone, before
    assert target.stats()["served"] == served  # priming is not a served request
    previous = hub.get("1.0.0").primed
    hub.use("1.1.0")
    hub.use("1.0.0")
    assert str(hub.rollback().version) == "1.1.0"
    assert hub.get("1.0.0").primed > previous


def test_pinned_requests_ignore_the_active_version(hub: VersionHub, rows: np.ndarray) -> None:
    hub.use("1.0.0")
    assert str(hub.predict({"x": rows}, version="1.2.0").version) == "1.2.0"
    assert str(hub.predict({"x": rows}, version="canary").version) == "1.1.0"
    with pytest.raises(VersionNotLoadedError):
        hub.predict({"x": rows}, version="9.9.9")


def test_unload_refuses_the_active_version_and_drains_in_flight(demo_repo: Path, rows: np.ndarray) -> None:
    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu")
    hub.load("1.0.0")
    hub.load("1.1.0")
    with pytest.raises(HubError, match="active"):
        hub.unload("1.0.0")
    done = threading.Event()
    with hub.lease("1.1.0") as leased:
        worker = threading.Thread(target=lambda: (hub.unload("1.1.0"), done.set()))
        worker.start()
        time.sleep(0.3)
        assert not done.is_set(), "unload must wait for the in-flight request"
        assert leased.predict({"x": rows})[OUTPUT].shape == (16, 10)  # still served while draining
    worker.join(10)
    assert done.is_set()
    assert leased.state.value == "unloaded"
    assert "1.1.0" not in hub
    with pytest.raises(HubError, match="unloaded"):
        leased.predict({"x": rows})
    hub.close()


def test_unload_timeout_keeps_the_version(demo_repo: Path) -> None:
    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu")
    hub.load("1.0.0")
    hub.load("1.1.0")
    with hub.lease("1.1.0"), pytest.raises(HubError, match="in flight"):
        hub.unload("1.1.0", timeout=0.1)
    assert "1.1.0" in hub
    hub.unload("1.1.0")
    hub.close()


def test_tampered_version_is_refused_and_active_untouched(repo_copy: Path, rows: np.ndarray) -> None:
    params = repo_copy / "digits" / "1.1.0" / "inference.pdiparams"
    data = bytearray(params.read_bytes())
    data[-1] ^= 0x01
    params.write_bytes(bytes(data))
    events = []
    hub = VersionHub(ModelRepository(repo_copy), "digits", device="cpu")
    hub.subscribe(events.append)
    hub.load("1.0.0")
    with pytest.raises(IntegrityError, match="inference.pdiparams"):
        hub.load("1.1.0", activate=True)
    assert str(hub.active.version) == "1.0.0"
    assert str(hub.predict({"x": rows}).version) == "1.0.0"
    assert [e.kind for e in events] == ["loaded", "activated", "load_failed"]
    hub.close()


def test_memory_is_accounted_and_released(demo_repo: Path) -> None:
    params = (demo_repo / "resnet" / "1.0.0" / "inference.pdiparams").stat().st_size
    hub = VersionHub(ModelRepository(demo_repo), "resnet", device="cpu")
    hub.load("1.0.0")
    loaded = hub.active
    # ResNet-18 holds ~45 MB of weights: the accounting names them, whatever the process
    # freed before (its growth during the load may reuse that and be near nothing)
    assert loaded.memory.weights_bytes == params > 20 * 2**20
    assert "weights 4" in str(loaded.memory)
    hub.close()
    assert loaded.state.value == "unloaded"


def test_a_reload_in_a_process_that_freed_memory_still_names_its_weights(demo_repo: Path) -> None:
    """A reload reuses what the unload freed, so RSS growth alone reads ~0 for ResNet-18."""
    first = VersionHub(ModelRepository(demo_repo), "resnet", device="cpu")
    first.load("1.0.0")
    first.close()
    hub = VersionHub(ModelRepository(demo_repo), "resnet", device="cpu")
    hub.load("1.0.0")
    usage = hub.active.memory
    assert usage.weights_bytes > 20 * 2**20, usage
    hub.close()


def test_cloned_shutil_source_is_not_needed_after_load(repo_copy: Path, rows: np.ndarray) -> None:
    hub = VersionHub(ModelRepository(repo_copy), "digits", device="cpu")
    hub.load("1.0.0")
    shutil.rmtree(repo_copy / "digits" / "1.0.0")  # weights live in memory now
    assert hub.predict({"x": rows}).outputs[OUTPUT].shape == (16, 10)
    hub.close()


def test_versions_loaded_and_run_from_threads_that_come_and_go(demo_repo: Path) -> None:
    """Paddle keeps per-thread state; the hub must not care which threads call it."""
    from workbench import compare

    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu")
    rows = digits_dataset()[2][:8]
    errors: list[BaseException] = []

    def in_thread(work) -> None:
        def run() -> None:
            try:
                work()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(60)

    in_thread(lambda: hub.load("1.0.0"))
    in_thread(lambda: hub.load("1.1.0"))
    for _ in range(10):
        # batch size 3 is not among the warmed sizes: Paddle prepares it on first use
        in_thread(lambda: compare(hub, rows, batch_size=3))
    assert errors == []
    hub.close()
