"""Demo models trained here, on data that ships with scikit-learn (no downloads).

``digits`` (8x8 handwritten digits, input ``x``: 64 features → output ``probabilities``:
10 class probabilities; each version's sample holds 400 rows of the test split):

- 1.0.0 ``stable``: a softmax-regression baseline
- 1.1.0 ``canary``: a better two-layer network
- 1.2.0: deliberately degraded (trained on mostly shuffled labels), for rollback demos

``resnet`` 1.0.0: ResNet-18 (random weights), ``image`` 3x224x224 → ``logits``, a compute-heavy model
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
from workbench.model.manifest import TensorSpec
from workbench.model.repository import ModelRepository
from workbench.model.version import Version

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from workbench._types import StrPath

log = logging.getLogger(__name__)
SEED = 2026
Array = np.ndarray[Any, Any]
DIGITS_INPUT = "x"
DIGITS_OUTPUT = "probabilities"
RESNET_INPUT = "image"
RESNET_OUTPUT = "logits"
#: Rows of the digits test split recorded as each version's sample: enough for an
#: agreement check to tell 1.1.0 (better) from 1.2.0 (degraded) with confidence.
DIGITS_SAMPLE_ROWS = 400


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
    name_outputs(workdir / "inference.json", [DIGITS_OUTPUT])
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
    name_outputs(workdir / "inference.json", [RESNET_OUTPUT])


def name_outputs(program: Path, names: list[str]) -> None:
    """Give an exported program's outputs real names instead of ``fetch_name_<i>``.

    Paddle's PIR export names an output after its value, and the values of a layer's
    results have no name (only persistable values can be named), so the fetch ops get
    ``fetch_name_<i>``. The name is the ``name`` attribute of each ``fetch`` op in the
    program JSON; it is rewritten there, in output order.
    """
    import json

    data = json.loads(program.read_text(encoding="utf-8"))
    fetches = []

    def visit(node: object) -> None:
        if isinstance(node, dict):
            if node.get("#") == "1.fetch":
                fetches.append(node)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(data)
    if len(fetches) != len(names):
        raise ValueError(f"{program} has {len(fetches)} outputs, not {len(names)}")
    for fetch in fetches:
        attrs = {a["N"]: a for a in fetch["A"]}
        attrs["name"]["AT"]["D"] = names[int(attrs["col"]["AT"]["D"])]
    program.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


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
                sample = {DIGITS_INPUT: x_test[:DIGITS_SAMPLE_ROWS]}
                metrics = {"accuracy": round(accuracy, 4)}
            else:
                _export_resnet(workdir)
                rng = np.random.default_rng(SEED)
                sample = {RESNET_INPUT: rng.standard_normal((2, 3, 224, 224)).astype(np.float32)}
                metrics = {}
            inputs, outputs = _signature(demo.model)
            repo.publish(
                demo.model, demo.version, workdir,
                sample=sample, inputs=inputs, outputs=outputs,
                metrics=metrics, notes=demo.notes, aliases=demo.aliases,
            )
        if progress:
            progress(demo, "done")
    return repo


def _signature(model: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The signature the demo exports declare (publishing need not run them to learn it)."""
    if model == "digits":
        return (
            [TensorSpec(DIGITS_INPUT, "float32", (-1, 64))],
            [TensorSpec(DIGITS_OUTPUT, "float32", (-1, 10))],
        )
    return (
        [TensorSpec(RESNET_INPUT, "float32", (-1, 3, 224, 224))],
        [TensorSpec(RESNET_OUTPUT, "float32", (-1, 1000))],
    )


def _exists(repo: ModelRepository, demo: DemoVersion) -> bool:
    try:
        return Version.parse(demo.version) in repo.versions(demo.model)
    except LookupError:
        return False
