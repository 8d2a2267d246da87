"""Replaying the reservoir, the sample or a labelled set to real stable and candidate instances."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

from tests.deploy._serve import serving_colors
from tests.serving.conftest import ADMIN_TOKEN, ServeProcess, json_infer_body
from workbench.deploy.rollout.replay import fetch_reservoir, load_labelled, output_check, replay
from workbench.errors import DeployError, ServingError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INFER = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.model.demo import digits_dataset

    _, _, x_test, y_test = digits_dataset()
    path = tmp_path_factory.mktemp("labelled") / "digits-test.npz"
    np.savez(path, x=x_test, labels=y_test)
    return path


@pytest.fixture(scope="module")
def instances(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, ServeProcess]]:
    colors = {"stable": ["--version", "1.0.0", "--reservoir-size", "64"],
               "good": ["--version", "1.1.0"],
               "degraded": ["--version", "1.2.0"],
               "failing": ["--version", "1.1.0", "--fault-error-rate", "1"]}
    with serving_colors(demo_repo, tmp_path_factory.mktemp("replay"), colors,
                         env={"WORKBENCH_ADMIN_TOKEN": ADMIN_TOKEN}) as servers:
        yield servers


def test_a_labelled_set_measures_agreement_and_accuracy(
        instances: dict[str, ServeProcess], labelled: Path) -> None:
    stable = instances["stable"].url
    good = output_check(stable, instances["good"].url, "digits", labelled=labelled)
    degraded = output_check(stable, instances["degraded"].url, "digits", labelled=labelled)
    assert good.rows == degraded.rows == 540
    assert good.accuracy_stable == degraded.accuracy_stable
    assert good.accuracy_stable is not None and good.accuracy_stable > 0.8
    assert good.accuracy_candidate is not None and good.accuracy_candidate > 0.8
    assert good.agreement is not None and good.agreement > 0.85
    assert degraded.accuracy_candidate is not None
    assert degraded.accuracy_candidate < good.accuracy_stable - 0.05  # the rule's 5 points
    assert degraded.agreement is not None and degraded.agreement < good.agreement
    same = output_check(stable, stable, "digits", labelled=labelled)
    assert same.agreement == 1.0 and same.accuracy_candidate == same.accuracy_stable
    # row by row, for the accuracy rule's sequential test: stable's right minus the
    # candidate's, whose mean is the drop
    assert len(degraded.row_truth) == 540 and {v for _, v in degraded.row_truth} <= {-1.0, 0.0, 1.0}
    drop = sum(v for _, v in degraded.row_truth) / 540
    assert drop == pytest.approx(degraded.accuracy_stable - degraded.accuracy_candidate)  # type: ignore[operator]
    assert all(v == 0.0 for _, v in same.row_truth)


def test_the_reservoir_of_real_requests_is_replayed(
        instances: dict[str, ServeProcess], labelled: Path) -> None:
    stable = instances["stable"]
    inputs, _ = load_labelled(labelled)
    with httpx.Client(timeout=30) as client:
        for start in range(0, 96, 8):  # real traffic reaches stable, 8 rows (its max batch) a time
            x = inputs["x"][start : start + 8]
            assert client.post(stable.url + INFER, json=json_infer_body(x)).status_code == 200
    reservoir = fetch_reservoir(stable.url, ADMIN_TOKEN)
    assert reservoir["x"].shape == (64, 64)
    check = output_check(stable.url, instances["good"].url, "digits", admin_token=ADMIN_TOKEN,
                         sample={"x": inputs["x"][:3]})
    assert check.rows == 64  # the reservoir, not the sample
    assert check.agreement is not None and check.agreement > 0.8
    # the replay is counted apart from live traffic and leaves the reservoir as it was
    from tests.serving.conftest import metric_value

    metrics = httpx.get(instances["good"].url + "/metrics").text
    assert metric_value(metrics, "workbench_replayed_requests_total", outcome="ok") >= 64
    assert metric_value(metrics, "workbench_requests_total", outcome="ok") == 0  # only replays
    assert check.accuracy_stable is None and check.accuracy_candidate is None
    with pytest.raises(ServingError, match="refused"):
        fetch_reservoir(stable.url, "wrong-token-123456")


def test_failed_replays_are_missing_evidence_and_nothing_to_compare_is_no_agreement(
        instances: dict[str, ServeProcess], labelled: Path) -> None:
    stable = instances["stable"].url
    inputs, labels = load_labelled(labelled)
    # the candidate answers every request 500: not one row compared, all named as failed
    # (the error-rate rule judges a failing candidate; agreement has nothing to go on)
    failing = replay(stable, instances["failing"].url, "digits", {"x": inputs["x"][:50]},
                     labels=labels[:50], batch_rows=20)
    assert (failing.rows, failing.agreement, failing.accuracy_candidate) == (0, None, None)
    assert (failing.failed, failing.failures) == (50, (("candidate 500", 50),))
    # the stable instance cannot answer: nothing was compared, so no agreement at all
    broken = replay(instances["failing"].url, stable, "digits", {"x": inputs["x"][:10]})
    assert broken.rows == 0 and broken.agreement is None
    assert broken.failures == (("stable 500", 10),)
    # no labelled set, no token, no sample: nothing to replay
    assert output_check(stable, stable, "digits").agreement is None


def test_a_bad_labelled_set_is_one_sentence(tmp_path: Path) -> None:
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((3, 64), np.float32))
    with pytest.raises(DeployError, match="'labels' array"):
        load_labelled(tmp_path / "nolabels.npz")
    with pytest.raises(DeployError, match="missing.npz does not exist"):
        load_labelled(tmp_path / "missing.npz")


def test_other_tasks_are_replayed_into_their_score(
        instances: dict[str, ServeProcess], labelled: Path) -> None:
    from workbench.deploy.rollout.analysis import AgreementRule, Observation
    from workbench.deploy.rollout.signals import ColorWindow
    from workbench.model.task import Task

    stable, good = instances["stable"].url, instances["good"].url
    inputs, _ = load_labelled(labelled)
    x = {"x": inputs["x"][:64]}
    same = replay(stable, stable, "digits", x, task=Task.GENERIC, batch_rows=16)
    assert same.agreement is None and same.rows == 64 and same.score is not None
    assert (same.score.metric, same.score.value) == ("within_tolerance", 1.0)
    other = replay(stable, good, "digits", x, task=Task.GENERIC, batch_rows=16)
    assert other.score is not None and other.score.value is not None
    assert other.score.value < 0.5 and other.score.details["max_abs_diff"] > 0.01
    failing = replay(stable, instances["failing"].url, "digits", x, task=Task.GENERIC)
    assert (failing.rows, failing.failed, failing.score) == (0, 64, None)
    # a decoder turns each row into a one-character "text": its CER is 1 - top-1 agreement
    top1 = replay(stable, good, "digits", x, batch_rows=16)
    assert top1.agreement is not None

    def as_text(version: str, out: np.ndarray) -> list[str]:
        return [str(i) for i in out.argmax(axis=-1)]

    read = replay(stable, good, "digits", x, task=Task.TEXT_RECOGNITION, decode=as_text,
                  batch_rows=16)
    assert read.score is not None and read.score.metric == "cer"
    assert read.score.value == pytest.approx(1 - top1.agreement)
    # row by row too (what the sequential test reads): 0 where the row's label agrees
    assert len(read.row_scores) == 64
    assert 1 - sum(v for _, v in read.row_scores) / 64 == pytest.approx(top1.agreement)
    assert [d for d, _ in read.row_scores] == [d for d, _ in top1.row_agreement]
    # the canary rule judges it by max_cer
    observed = Observation(30.0, ColorWindow("green", 30.0, 100, 0, 10.0, 1e8), output=read)
    strict, loose = AgreementRule(max_cer=0.01), AgreementRule(max_cer=0.5)
    assert strict.judge(observed).verdict == "fail"
    assert loose.judge(observed).verdict == "pass"
