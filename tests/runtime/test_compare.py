"""Side-by-side comparison: numbers checked on known inputs and against the manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench import ModelRepository, VersionHub, compare
from workbench.model.demo import digits_dataset
from workbench.runtime.compare import agreement, top1_agreement


def test_agreement_on_hand_made_outputs() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    result = agreement(a, b, names=("a", "b"))
    assert result.top1 == 0.5
    assert result.max_abs_diff == 1.0
    assert result.mean_abs_diff == 0.5
    assert result.cosine == pytest.approx(0.5)
    same = agreement(a, a)
    assert (same.top1, same.max_abs_diff, same.cosine) == (1.0, 0.0, pytest.approx(1.0))


def test_top1_agreement_is_the_same_measure_on_both_sides() -> None:
    from workbench.deploy.rollout.agreement import compare_outputs

    # two rows of two positions with three classes each: 3 of 4 positions agree, while an
    # argmax over the flattened row would call both rows equal
    a = np.array([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    b = np.array([[[0.0, 1.0, 0.0], [0.0, 0.0, 0.9]], [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    assert top1_agreement(a, b) == 0.75
    assert agreement(a, b).top1 == 0.75
    assert compare_outputs("out", a, b).top1 == 0.75
    assert top1_agreement(np.ones((4, 1)), np.ones((4, 1))) is None


@pytest.fixture(scope="module")
def hub(demo_repo: Path) -> VersionHub:
    hub = VersionHub(ModelRepository(demo_repo), "digits", device="cpu")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        hub.load(version)
    yield hub
    hub.close()


def test_compare_matches_manifest_accuracy_and_direct_predictions(hub: VersionHub, demo_repo: Path) -> None:
    _, _, x_test, y_test = digits_dataset()
    result = compare(hub, x_test, labels=y_test, batch_size=32)
    repo = ModelRepository(demo_repo)
    for version in result.versions:
        # the demo measured accuracy on the same test split when it trained the version
        assert result.accuracy[version] == pytest.approx(repo.manifest("digits", version).metrics["accuracy"], abs=1e-4)
    direct = {v: hub.predict({"x": x_test}, version=v).outputs["probabilities"] for v in result.versions}
    for pair in result.pairs:
        expected = agreement(direct[pair.a], direct[pair.b], names=(pair.a, pair.b))
        assert pair.top1 == pytest.approx(expected.top1)
        assert pair.max_abs_diff == pytest.approx(expected.max_abs_diff, abs=1e-6)
        assert pair.cosine == pytest.approx(expected.cosine, abs=1e-6)
    predicted = {v: d.argmax(1) for v, d in direct.items()}
    differ = np.flatnonzero((predicted["1.0.0"] != predicted["1.1.0"]) | (predicted["1.0.0"] != predicted["1.2.0"]))
    assert result.disagreements().tolist() == differ.tolist()
    table = result.table()
    assert list(table.index) == ["1.0.0", "1.1.0", "1.2.0"]
    assert {"accuracy", "p50_ms", "p99_ms", "rows_per_s", "top1_vs_1.0.0"} <= set(table.columns)
    latency = result.latency
    assert (latency["p99_ms"] >= latency["p50_ms"]).all()
    assert len(result.latencies["1.0.0"]) == int(np.ceil(len(x_test) / 32))
    assert "<table" in result._repr_html_()


def test_compare_rejects_bad_requests(hub: VersionHub) -> None:
    x = digits_dataset()[2][:10]
    with pytest.raises(Exception, match="labels for 10 rows"):
        compare(hub, x, labels=[1, 2])
    with pytest.raises(Exception, match="not loaded"):
        compare(hub, x, versions=["1.0.0", "4.0.0"])
