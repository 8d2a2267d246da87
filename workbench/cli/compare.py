"""``workbench compare``: several versions side by side on the same inputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from workbench.cli._common import JsonOption, RepoOption, console, print_json, resolve_repo

if TYPE_CHECKING:
    from rich.table import Table


def register(app: typer.Typer) -> None:
    app.command("compare", no_args_is_help=True)(compare)


def _load_data(path: Path) -> tuple[dict[str, Any] | Any, Any]:
    """Inputs and optional labels from a .npz (named inputs, optional ``labels``) or .npy file."""
    import numpy as np

    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        labels = arrays.pop("labels", None)
        return arrays, labels
    return np.load(path, allow_pickle=False), None


def compare(
    model: Annotated[str, typer.Argument(help="Model name.")],
    versions: Annotated[
        list[str] | None, typer.Argument(help="Versions or aliases [default: all versions].")
    ] = None,
    repo: RepoOption = None,
    data: Annotated[
        Path | None,
        typer.Option(help=".npz of named inputs (and optional `labels`) or .npy [default: the sample]."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help=".npy of ground truth: integer class labels, or texts for "
                     "text-recognition."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per request.")] = 1,
    device: Annotated[str, typer.Option(help="cpu, gpu:N or auto.")] = "auto",
    isolation: Annotated[
        str,
        typer.Option(
            help="process: each version in its own worker process, all run at once (this "
            "command never imports Paddle); thread: in this process, one after another; "
            "auto: process on a GPU, thread on the CPU."
        ),
    ] = "auto",
    task: Annotated[
        str | None,
        typer.Option(
            help="How outputs are compared: classification (top-1 agreement), text-detection "
            "(box F1 at IoU 0.5), text-recognition (character error rate, exact match) or "
            "generic (rows within a tolerance) [default: the manifest's, else classification "
            "for class scores, generic otherwise]. Detection and recognition compare decoded "
            "results: every version needs a codec (published from a PaddleX export, or with "
            "--config).",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold",
            help="A bound that gives the scores a verdict (pass, fail or inconclusive when "
            "the 95% interval straddles it), repeatable: top1>=0.85, box_f1>=0.9, "
            "cer<=0.05, exact_match>=0.8, within_tolerance>=0.99.",
        ),
    ] = None,
    min_rows: Annotated[
        int, typer.Option(help="Fewer rows than this make a verdict inconclusive.")
    ] = 1,
    json: JsonOption = False,
) -> None:
    """Run one input batch through several versions: latency, agreement, accuracy.

    Agreement is measured by the task, each score with its 95% interval: top-1 for
    classification, box F1 for text detection, CER for text recognition, rows within a
    tolerance for anything else. With --threshold each score gets a verdict.
    """
    import numpy as np

    from workbench import ModelRepository, VersionHub
    from workbench.errors import InputError
    from workbench.model.task import Task
    from workbench.runtime.scoring import Threshold

    if isolation not in ("process", "thread", "auto"):
        raise typer.BadParameter("--isolation must be process, thread or auto")
    try:
        kind = Task.parse(task) if task is not None else None
        bounds = [Threshold.parse(t) for t in threshold or ()]
    except (ValueError, InputError) as exc:
        raise typer.BadParameter(str(exc)) from None
    from workbench import compare as run_compare

    repository = ModelRepository(resolve_repo(repo))
    targets = [str(repository.resolve(model, v)) for v in (versions or [])] or [
        str(v) for v in repository.versions(model)
    ]
    if data is not None:
        inputs, label_values = _load_data(data)
    else:
        inputs, label_values = repository.sample(model, targets[0]), None
    if labels is not None:
        label_values = np.load(labels, allow_pickle=False)
    from workbench.codecs import Codec
    from workbench.runtime.decoders import codec_decoder

    manifests = {v: repository.manifest(model, v) for v in targets}
    hub = VersionHub(repository, model, device=device, isolation=isolation)
    try:
        with console.status(f"loading {', '.join(targets)}") as status:
            for version in targets:
                status.update(f"loading and warming {model}:{version}")
                hub.load(version)
            status.update("running side by side")
            result = run_compare(hub, inputs, versions=targets, labels=label_values,
                                 batch_size=batch_size, task=kind, thresholds=bounds,
                                 min_rows=min_rows,
                                 decode=codec_decoder(manifests, Codec))
    finally:
        hub.close()
    if json:
        print_json(result.to_dict())
        return
    console.print(_frame_table(result.table(), f"{model}: {result.rows} rows, batch {batch_size}"))
    console.print(_frame_table(result.agreement.set_index(["a", "b"]), "agreement"))
    for pair in result.pairs:
        for score in pair.scores:
            console.print(f"{pair.a} vs {pair.b}: {score}")
    disagree = result.disagreements()
    console.print(f"{len(disagree)} row(s) where versions disagree" + (
        f": {disagree[:20].tolist()}" + (" …" if len(disagree) > 20 else "") if len(disagree) else ""
    ))


def _frame_table(frame: Any, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    names = frame.index.names
    for name in names:
        table.add_column(str(name or ""))
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for index, row in frame.iterrows():
        keys = index if isinstance(index, tuple) else (index,)
        table.add_row(*[str(k) for k in keys], *[_fmt(v) for v in row])
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
