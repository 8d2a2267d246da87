"""Demo models trained here, on data that ships with scikit-learn (no downloads).

``digits`` (8x8 handwritten digits, 64 features → 10 class probabilities):

- 1.0.0 ``stable``: a softmax-regression baseline
- 1.1.0 ``canary``: a better two-layer network
- 1.2.0: deliberately degraded (trained on mostly shuffled labels), for rollback demos

``resnet`` 1.0.0: ResNet-18 (random weights) at 3x224x224, a compute-heavy model
for benchmarks. Training is seeded, so the same machine publishes the same models.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._paddle import import_paddle
from workbench.errors import MissingDependencyError
from workbench.model.repository import ModelRepository
from workbench.model.version import Version

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from workbench._types import StrPath

log = logging.getLogger(__name__)
SEED = 2026
Array = np.ndarray[Any, Any]
DIGITS_INPUT = "x"
RESNET_INPUT = "image"


@dataclass(frozen=True)
class DemoVersion:
    model: str
    version: str
    aliases: tuple[str, ...]
    notes: str


DIGITS_VERSIONS = (
    DemoVersion("digits", "1.0.0", ("stable",), "softmax regression baseline"),
    DemoVersion("digits", "1.1.0", ("canary",), "two-layer network, 128 hidden units"),
    DemoVersion("digits", "1.2.0", (), "degraded on purpose: trained on 80% shuffled labels"),
)
RESNET_VERSION = DemoVersion("resnet", "1.0.0", (), "ResNet-18, random weights, 3x224x224 input")
ALL = (*DIGITS_VERSIONS, RESNET_VERSION)


def digits_dataset() -> tuple[Array, Array, Array, Array]:
    """``(x_train, y_train, x_test, y_test)``: scikit-learn's digits in [0, 1], a seeded 70/30 split."""
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("scikit-learn", "notebook") from exc

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    cut = int(len(x) * 0.7)
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


def _train_digits(kind: str, workdir: Path) -> float:
    """Train one digits network, export it to ``workdir``; return its test accuracy."""
    paddle = import_paddle()
    from paddle import nn
    from paddle.static import InputSpec

    paddle.seed(SEED)
    x_train, y_train, x_test, y_test = digits_dataset()
    rng = np.random.default_rng(SEED)
    if kind == "degraded":
        y_train = y_train.copy()
        noisy = rng.random(len(y_train)) < 0.8
        y_train[noisy] = rng.integers(0, 10, noisy.sum())
    if kind == "baseline":
        body: nn.Layer = nn.Linear(64, 10)
        epochs, lr = 40, 0.1
    else:
        body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        epochs, lr = (60, 0.01) if kind == "better" else (8, 0.01)
    optimizer: Any = (
        paddle.optimizer.SGD(learning_rate=lr, parameters=body.parameters())
        if kind == "baseline"
        else paddle.optimizer.Adam(learning_rate=lr, parameters=body.parameters())
    )
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = paddle.to_tensor(x_train), paddle.to_tensor(y_train)
    for _ in range(epochs):
        for start in range(0, len(x_train), 64):
            loss = loss_fn(body(xt[start : start + 64]), yt[start : start + 64])
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
    net = nn.Sequential(body, nn.Softmax())
    net.eval()
    predicted = net(paddle.to_tensor(x_test)).numpy().argmax(axis=1)
    accuracy = float((predicted == y_test).mean())
    spec = [InputSpec([None, 64], "float32", DIGITS_INPUT)]
    paddle.jit.save(net, str(workdir / "inference"), input_spec=spec)
    return accuracy


def _export_resnet(workdir: Path) -> None:
    paddle = import_paddle()
    from paddle.static import InputSpec
    from paddle.vision.models import resnet18

    paddle.seed(SEED)
    net = resnet18(pretrained=False, num_classes=1000)
    net.eval()
    spec = [InputSpec([None, 3, 224, 224], "float32", RESNET_INPUT)]
    paddle.jit.save(net, str(workdir / "inference"), input_spec=spec)


def build_demo_repository(
    root: StrPath,
    *,
    models: Iterable[str] = ("digits", "resnet"),
    progress: Callable[[DemoVersion, str], None] | None = None,
) -> ModelRepository:
    """Train and publish the demo models into ``root``; versions already there are kept.

    ``progress(demo_version, status)`` is called with status ``"start"``,
    ``"done"`` or ``"exists"`` for each version.
    """
    repo = ModelRepository(root)
    repo.root.mkdir(parents=True, exist_ok=True)
    wanted = set(models)
    unknown = wanted - {d.model for d in ALL}
    if unknown:
        raise ValueError(f"unknown demo model(s): {', '.join(sorted(unknown))} (choose digits, resnet)")
    kinds = {"1.0.0": "baseline", "1.1.0": "better", "1.2.0": "degraded"}
    for demo in (d for d in ALL if d.model in wanted):
        if _exists(repo, demo):
            if progress:
                progress(demo, "exists")
            continue
        if progress:
            progress(demo, "start")
        with tempfile.TemporaryDirectory(prefix="workbench-demo-") as tmp:
            workdir = Path(tmp)
            if demo.model == "digits":
                accuracy = _train_digits(kinds[demo.version], workdir)
                x_test = digits_dataset()[2]
                sample = {DIGITS_INPUT: x_test[:8]}
                metrics = {"accuracy": round(accuracy, 4)}
            else:
                _export_resnet(workdir)
                rng = np.random.default_rng(SEED)
                sample = {RESNET_INPUT: rng.standard_normal((2, 3, 224, 224)).astype(np.float32)}
                metrics = {}
            repo.publish(
                demo.model, demo.version, workdir,
                sample=sample, metrics=metrics, notes=demo.notes, aliases=demo.aliases,
            )
        if progress:
            progress(demo, "done")
    return repo


def _exists(repo: ModelRepository, demo: DemoVersion) -> bool:
    try:
        return Version.parse(demo.version) in repo.versions(demo.model)
    except LookupError:
        return False
