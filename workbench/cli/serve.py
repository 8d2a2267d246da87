"""``workbench serve``: one serving instance of one model (what every blue/green container runs)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.serving.faults import FaultConfig

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
    max_queue: Annotated[
        int, typer.Option(help="Requests waiting per version; more get 503 with Retry-After.")
    ] = 256,
    max_connections: Annotated[
        int, typer.Option(help="Open connections; more get 503 and are closed.")
    ] = 1024,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds for a request's headers to arrive, else 408.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(help="Longest pause in a request body, in seconds, else 408.")
    ] = 30.0,
    keep_alive_timeout: Annotated[
        float, typer.Option(help="Seconds an idle kept-alive connection stays open.")
    ] = 5.0,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(help=f"File holding the admin bearer token (or set ${ADMIN_TOKEN_ENV})."),
    ] = None,
    reject_nonfinite: Annotated[
        bool,
        typer.Option("--reject-nonfinite",
                     help="Refuse NaN and infinity in inputs (accepted by default, as Triton does)."),
    ] = False,
    graceful_timeout: Annotated[
        float, typer.Option(help="Seconds to let in-flight requests finish on SIGTERM.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[
        str,
        typer.Option(envvar="WORKBENCH_LOG_FORMAT",
                     help="text, or json: JSON lines tagged with model and model_version."),
    ] = "text",
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every inference request.")
    ] = True,
    reservoir_size: Annotated[
        int, typer.Option(help="Request rows kept as a uniform sample for canary replay (0: off).")
    ] = 256,
    fault_error_rate: Annotated[
        float, typer.Option(help="Chaos testing: share of inference requests answered 500 (0..1).")
    ] = 0.0,
    fault_latency_ms: Annotated[
        float, typer.Option(help="Chaos testing: milliseconds added to every inference request.")
    ] = 0.0,
    fault_version: Annotated[
        list[str] | None,
        typer.Option(help="Chaos testing: inject faults only into this version (repeatable)."),
    ] = None,
    fault_segment: Annotated[
        str | None,
        typer.Option(help="Chaos testing: inject faults only into the requests of one traffic "
                     "segment: x-tenant=b (a header) or param:tenant=b (a request parameter)."),
    ] = None,
    segment_by: Annotated[
        list[str] | None,
        typer.Option(help="Also count requests per traffic segment, read from a header "
                     "(header:x-tenant) or a request parameter (param:tenant); repeatable."),
    ] = None,
    max_segments: Annotated[
        int, typer.Option(help="Distinct segment values counted apart per key; later ones "
                          "are pooled as 'other'.")
    ] = 16,
) -> None:
    """Serve a model over the Open Inference Protocol (KServe v2 REST), with metrics and admin.

    Several versions can be loaded at once; a request pins one with
    /v2/models/NAME/versions/V/infer or the x-model-version header, and every response
    names the version that answered. SIGTERM drains in-flight requests and exits 0.
    """
    from workbench.model.repository import ModelRepository
    from workbench.runtime.hub import VersionHub
    from workbench.serving.batching import BatchingConfig
    from workbench.serving.connections import ConnectionLimits
    from workbench.serving.segments import SegmentKey
    from workbench.serving.server import ServerOptions, bind, run
    from workbench.serving.service import ServingSettings
    from workbench.settings import Settings

    if log_format not in ("text", "json"):
        raise typer.BadParameter(f"--log-format must be text or json, not {log_format!r}")
    _configure_logging(log_level)
    if version and alias:
        raise typer.BadParameter("give --version or --alias, not both")
    if isolation not in ("process", "thread"):
        raise typer.BadParameter("--isolation must be process or thread")
    try:
        workers = workers if workers is not None else default_workers(isolation, device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if workers < 1 or cpu_threads < 1:
        raise typer.BadParameter("--workers and --cpu-threads must be at least 1")
    primary = version or alias or "latest"
    refs = [primary, *[ref for ref in (load or []) if ref != primary]]
    try:
        settings = ServingSettings(
            batching=BatchingConfig(
                enabled=not no_batching,
                max_batch_size=max_batch_size,
                max_queue_delay_ms=max_queue_delay_ms,
                max_queue=max_queue,
            ),
            max_body_bytes=int(max_body_mb * 2**20),
            admin_token=read_admin_token(admin_token_file),
            reject_nonfinite=reject_nonfinite,
            startup=tuple(refs),
            reload_ref=primary,
            access_log=access_log,
            reservoir_size=reservoir_size,
            faults=fault_config(fault_error_rate, fault_latency_ms, fault_version,
                                fault_segment),
            segment_by=tuple(SegmentKey.parse(key) for key in segment_by or ()),
            max_segments=max_segments,
        )
        limits = ConnectionLimits(
            keep_alive_timeout=keep_alive_timeout,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            max_connections=max_connections,
        )
        options = ServerOptions(host=host, port=port, graceful_timeout=graceful_timeout,
                                log_level=log_level.lower(), limits=limits)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    env = Settings.from_env()
    repository = ModelRepository(repo or env.repo, verify_key=env.verify_key)
    # fail fast, before binding, on a version that does not exist
    resolved = [repository.resolve(model, ref) for ref in refs]
    if log_format == "json":
        _json_logging(model, str(resolved[0]))
    sock = bind(host, port)  # a busy port fails here, before anything is loaded or logged
    from workbench.runtime.worker import SCHEDULING_ENV

    # a serving instance's workers are scheduled for throughput (see runtime.worker)
    os.environ.setdefault(SCHEDULING_ENV, "batch")
    try:
        hub = VersionHub(
            repository,
            model,
            device=device,
            isolation=isolation,
            workers=workers,
            cpu_threads=cpu_threads,
            warmup_batch_sizes=warmup_sizes(max_batch_size) if not no_batching else (),
        )
        run(hub, settings, options, sock)
    finally:
        sock.close()
    # Drained, unloaded and logged: skip the interpreter's teardown of Paddle, which takes
    # about a second (several on a busy host) and holds up whoever waits for the exit.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


def fault_config(
    error_rate: float, latency_ms: float, versions: list[str] | None, segment: str | None = None,
) -> FaultConfig | None:
    """The chaos-testing faults asked for, or None when there are none."""
    from workbench.serving.faults import FaultConfig

    faults = FaultConfig(error_rate, latency_ms, tuple(versions or ()), segment)
    if not faults.active:
        return None
    logging.getLogger("workbench.serving").warning("fault injection on: %s", faults)
    return faults


def default_workers(isolation: str, device: str) -> int:
    """One worker process per usable CPU core in process isolation on the CPU, else 1
    (``auto`` on a machine with a GPU is the GPU; deciding it does not import Paddle)."""
    from workbench.runtime.device import Device

    if isolation != "process" or Device.parse(device).is_gpu:
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


def _json_logging(model: str, version: str) -> None:
    from workbench.serving.jsonlog import JsonFormatter

    for name in ("workbench", "uvicorn", "uvicorn.error"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(JsonFormatter(model, version))


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
