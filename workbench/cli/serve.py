"""``workbench serve``: one serving instance of one model (what every blue/green container runs)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from workbench.errors import WorkbenchError

ADMIN_TOKEN_ENV = "WORKBENCH_ADMIN_TOKEN"


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the workbench CLI."""
    app.command("serve", no_args_is_help=True)(serve)


def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to serve.")],
    repo: Annotated[
        Path | None,
        typer.Option(help="Model repository (default: $WORKBENCH_REPO or $WORKBENCH_HOME/models)."),
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Version to make active.")
    ] = None,
    alias: Annotated[
        str | None, typer.Option(help="Alias to make active (e.g. stable); default: latest.")
    ] = None,
    load: Annotated[
        list[str] | None,
        typer.Option(help="Also load this version or alias (repeatable); pin it per request."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, gpu, gpu:N or auto.")] = "auto",
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    isolation: Annotated[
        str,
        typer.Option(
            help="process: each version in its own worker processes (this server never "
            "imports Paddle; a crashing model restarts, unload frees memory); thread: "
            "predictors inside the server process."
        ),
    ] = "process",
    workers: Annotated[
        int | None,
        typer.Option(
            help="Per version: worker processes (process isolation; default one per CPU "
            "core, one per GPU) or predictor clones (thread isolation; default 1, and "
            "Paddle holds the GIL while it runs, so clones add no CPU throughput)."
        ),
    ] = None,
    cpu_threads: Annotated[
        int, typer.Option(help="CPU math threads per predictor clone.")
    ] = 1,
    max_batch_size: Annotated[int, typer.Option(help="Rows per dynamic batch.")] = 8,
    max_queue_delay_ms: Annotated[
        float, typer.Option(help="Longest wait for a batch to fill once a predictor is free.")
    ] = 0.0,
    no_batching: Annotated[
        bool, typer.Option("--no-batching", help="One request per predictor run.")
    ] = False,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, in MiB.")] = 64.0,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(help=f"File holding the admin bearer token (or set ${ADMIN_TOKEN_ENV})."),
    ] = None,
    allow_nonfinite: Annotated[
        bool, typer.Option("--allow-nonfinite", help="Accept NaN and infinity in inputs.")
    ] = False,
    graceful_timeout: Annotated[
        float, typer.Option(help="Seconds to let in-flight requests finish on SIGTERM.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every inference request.")
    ] = True,
) -> None:
    """Serve a model over the Open Inference Protocol (KServe v2 REST), with metrics and admin.

    Several versions can be loaded at once; a request pins one with
    /v2/models/NAME/versions/V/infer or the x-model-version header, and every response
    names the version that answered. SIGTERM drains in-flight requests and exits 0.
    """
    from workbench.model.repository import ModelRepository
    from workbench.runtime.hub import VersionHub
    from workbench.serving.batching import BatchingConfig
    from workbench.serving.server import ServerOptions, run
    from workbench.serving.service import ServingSettings
    from workbench.settings import Settings

    _configure_logging(log_level)
    if version and alias:
        raise typer.BadParameter("give --version or --alias, not both")
    env = Settings.from_env()
    repository = ModelRepository(repo or env.repo, verify_key=env.verify_key)
    primary = version or alias or "latest"
    refs = [primary, *[ref for ref in (load or []) if ref != primary]]
    for ref in refs:  # fail fast, before binding, on a version that does not exist
        repository.resolve(model, ref)
    try:
        settings = ServingSettings(
            batching=BatchingConfig(
                enabled=not no_batching,
                max_batch_size=max_batch_size,
                max_queue_delay_ms=max_queue_delay_ms,
            ),
            max_body_bytes=int(max_body_mb * 2**20),
            admin_token=read_admin_token(admin_token_file),
            allow_nonfinite=allow_nonfinite,
            startup=tuple(refs),
            reload_ref=primary,
            access_log=access_log,
        )
        options = ServerOptions(host=host, port=port, graceful_timeout=graceful_timeout,
                                log_level=log_level.lower())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if isolation not in ("process", "thread"):
        raise typer.BadParameter("--isolation must be process or thread")
    workers = workers if workers is not None else default_workers(isolation, device)
    if workers < 1 or cpu_threads < 1:
        raise typer.BadParameter("--workers and --cpu-threads must be at least 1")
    hub = VersionHub(
        repository,
        model,
        device=device,
        isolation=isolation,
        workers=workers,
        cpu_threads=cpu_threads,
        warmup_batch_sizes=warmup_sizes(max_batch_size) if not no_batching else (),
    )
    run(hub, settings, options)


def default_workers(isolation: str, device: str) -> int:
    """One worker process per usable CPU core in process isolation on the CPU, else 1."""
    if isolation != "process" or device.strip().lower().startswith("gpu"):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def warmup_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Batch sizes the batcher produces most: 1, 2, 4, ... and the maximum itself."""
    sizes = {max_batch_size}
    size = 1
    while size < max_batch_size:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


def read_admin_token(path: Path | None) -> str | None:
    """The admin token from ``path`` if given, else from $WORKBENCH_ADMIN_TOKEN; None: admin off."""
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise WorkbenchError(f"cannot read the admin token file {path}: {exc}") from exc
        if not token:
            raise WorkbenchError(f"the admin token file {path} is empty")
        return token
    token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    return token or None


def _configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("workbench", "uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers = [handler]
        log.setLevel(numeric)
        log.propagate = False
