"""What the magics and the panels both do: tables, loading, comparing, benchmarking.

Plain functions over a :class:`~workbench_ext.state.Session` and the workbench's
public API; the magics parse arguments and display, the panels wire buttons.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench import InputError, LoadedVersion, ModelRepository, compare
from workbench.runtime import percentiles
from workbench_ext.errors import SessionError
from workbench_ext.progress import pool, run_with_progress

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pandas as pd

    from workbench import Comparison, TensorSpec, VersionHub
    from workbench_ext.state import Session

log = logging.getLogger(__name__)
Array = np.ndarray[Any, Any]
DEMO_MODELS = ("digits", "resnet")


# -- inputs ---------------------------------------------------------------------------


def coerce_inputs(specs: Sequence[TensorSpec], value: Any) -> dict[str, Array]:
    """Turn an array, a list or a dict into the model's named inputs.

    One array is the model's only input; a single row (one dimension short of the
    signature) becomes a batch of one.
    """
    if isinstance(value, dict):
        arrays = {str(k): np.asarray(v) for k, v in value.items()}
    else:
        if len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise InputError(f"the model has inputs {names}: pass a dict of arrays")
        arrays = {specs[0].name: np.asarray(value)}
    for spec in specs:
        array = arrays.get(spec.name)
        if array is not None and array.ndim == len(spec.shape) - 1:
            arrays[spec.name] = array[np.newaxis, ...]
    return arrays


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in value.items()) + "}"
    array = np.asarray(value)
    return f"{array.dtype}[{', '.join(str(d) for d in array.shape)}]"


# -- tables ---------------------------------------------------------------------------


def models_table(session: Session) -> pd.DataFrame:
    """One row per model in the repository: versions, aliases, what is loaded and active."""
    import pandas as pd

    rows = []
    for model in session.repo.models():
        hub = session.hubs.get(model)
        aliases = session.repo.aliases(model)
        versions = session.repo.versions(model)
        rows.append(
            {
                "model": model,
                # pipeline (an OCR pipeline naming its stage versions) or model
                "kind": session.repo.kind(model, versions[-1]) if versions else "",
                "versions": ", ".join(str(v) for v in versions),
                "aliases": ", ".join(f"{a}→{v}" for a, v in aliases.items()),
                "loaded": ", ".join(str(lv.version) for lv in hub.loaded) if hub else "",
                "active": str(hub.active.version) if hub and hub.active else "",
            }
        )
    return pd.DataFrame.from_records(
        rows, columns=["model", "kind", "versions", "aliases", "loaded", "active"]
    ).set_index("model")


def versions_table(session: Session, model: str) -> pd.DataFrame:
    """One row per version of ``model``: aliases, metrics, notes, and its state in this kernel."""
    import pandas as pd

    repo = session.repo
    hub = session.hubs.get(model)
    aliases: dict[str, list[str]] = {}
    for alias, version in repo.aliases(model).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    metric_names: list[str] = []
    pipelines = False
    for version in repo.versions(model):
        if repo.kind(model, version) == "pipeline":  # its stages, in order, instead of metrics
            pipelines = True
            pipeline = repo.pipeline(model, version)
            loaded = _loaded(hub, str(version))
            rows.append({
                "version": str(version),
                "aliases": ", ".join(aliases.get(str(version), [])),
                "stages": " → ".join(f"{s.role} {s.ref}" for s in pipeline.stages),
                "notes": pipeline.notes,
                "created": pipeline.created,
                "loaded": loaded.device if loaded else "",
                "active": bool(hub and hub.active is not None and hub.active is loaded and loaded),
            })
            continue
        manifest = repo.manifest(model, version)
        for name in manifest.metrics:
            if name not in metric_names:
                metric_names.append(name)
        loaded = _loaded(hub, str(version))
        rows.append(
            {
                "version": str(version),
                "aliases": ", ".join(aliases.get(str(version), [])),
                **{f"metric:{k}": v for k, v in manifest.metrics.items()},
                "notes": manifest.notes,
                "created": manifest.created,
                "loaded": loaded.device if loaded else "",
                "active": bool(hub and hub.active is not None and hub.active is loaded and loaded),
            }
        )
    columns = [
        "version",
        "aliases",
        *(["stages"] if pipelines else []),
        *[f"metric:{m}" for m in metric_names],
        "notes",
        "created",
        "loaded",
        "active",
    ]
    frame = pd.DataFrame.from_records(rows, columns=columns).set_index("version")
    return frame.rename(columns={f"metric:{m}": m for m in metric_names})


def _worker_processes(lv: LoadedVersion) -> str:
    """Process isolation: each worker's pid, state and resident memory; empty in-process."""
    workers_info = getattr(lv, "workers_info", None)
    if workers_info is None:
        return ""
    return "; ".join(
        f"pid {w['pid']} {w['state']} {w['rss_bytes'] / 2**20:.1f} MiB" for w in workers_info()
    )


def loaded_table(hub: VersionHub) -> pd.DataFrame:
    """One row per loaded version: device, memory, state, requests and latency."""
    import pandas as pd

    rows = []
    for lv in hub.loaded:
        stats = lv.stats()
        memory = lv.memory
        rows.append(
            {
                "version": str(lv.version),
                "active": lv is hub.active,
                "device": lv.device,
                "state": lv.state.value,
                "memory_mib": round(memory.rss_bytes / 2**20, 1),
                "gpu_mib": None if memory.gpu_bytes is None else round(memory.gpu_bytes / 2**20, 1),
                "workers": lv.workers,
                "isolation": lv.isolation,
                "memory_scope": memory.scope,
                "worker_processes": _worker_processes(lv),
                "inflight": stats["inflight"],
                "served": stats["served"],
                "failed": stats["failed"],
                "p50_ms": None if stats["p50"] is None else round(stats["p50"] * 1000, 3),
                "p99_ms": None if stats["p99"] is None else round(stats["p99"] * 1000, 3),
                "load_s": round(lv.load_seconds, 2),
            }
        )
    columns = [
        "version",
        "active",
        "device",
        "state",
        "memory_mib",
        "gpu_mib",
        "workers",
        "isolation",
        "memory_scope",
        "worker_processes",
        "inflight",
        "served",
        "failed",
        "p50_ms",
        "p99_ms",
        "load_s",
    ]
    return pd.DataFrame.from_records(rows, columns=columns).set_index("version")


def _loaded(hub: VersionHub | None, version: str) -> LoadedVersion | None:
    if hub is None:
        return None
    for lv in hub.loaded:
        if str(lv.version) == version:
            return lv
    return None


# -- actions --------------------------------------------------------------------------


def build_demo(root: Any, models: Sequence[str] = ("digits",), *, progress: bool = True) -> ModelRepository:
    """Train and publish the demo models into ``root`` (versions already there are kept)."""
    from workbench.model import DEMO_VERSIONS, build_demo_repository

    unknown = set(models) - set(DEMO_MODELS)
    if unknown:
        raise SessionError(f"unknown demo model(s) {', '.join(sorted(unknown))}; choose from digits, resnet")
    total = sum(1 for d in DEMO_VERSIONS if d.model in models)
    finished = [0]
    current = [""]

    def report(demo: Any, status: str) -> None:
        if status == "start":
            current[0] = f"{demo.model}:{demo.version}"
        else:
            finished[0] += 1

    built = run_with_progress(
        lambda: build_demo_repository(root, models=models, progress=report),
        desc="demo models",
        total=total,
        done=lambda: finished[0],
        status=lambda: current[0],
        unit="version",
        disable=not progress,
    )
    return ModelRepository(built.root)  # workbench's, with Paddle as its probe


def load_versions(
    session: Session,
    model: str,
    refs: Sequence[str | None],
    *,
    device: str | None = None,
    memory_pool_mb: int | None = None,
    workers: int | None = None,
    activate: bool | None = None,
    isolation: str | None = None,
    progress: bool = True,
) -> list[LoadedVersion]:
    """Load (verify, warm) versions of ``model``; the first load of a hub becomes active."""
    hub = session.hub(model)
    targets = [session.repo.resolve(model, ref) for ref in refs]
    done: list[LoadedVersion] = []

    def work() -> list[LoadedVersion]:
        for index, version in enumerate(targets):
            make_active = activate if (activate is not None and index == len(targets) - 1) else None
            if activate is False:
                make_active = False
            done.append(
                hub.load(
                    version,
                    device=device,
                    memory_pool_mb=memory_pool_mb,
                    workers=workers,
                    activate=make_active,
                    isolation=isolation,
                )
            )
        return done

    return run_with_progress(
        work,
        desc=f"load {model}",
        total=len(targets),
        done=lambda: len(done),
        status=lambda: str(targets[min(len(done), len(targets) - 1)]),
        unit="version",
        disable=not progress,
    )


def run_compare(
    session: Session,
    model: str,
    versions: Sequence[str],
    data: Any,
    *,
    labels: Any = None,
    batch_size: int = 32,
    load_missing: bool = True,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Compare ``versions`` (default: every loaded one) of ``model`` on ``data``.

    Versions that are not loaded yet are loaded first (not activated) when ``load_missing``.
    ``on_progress(done, total)`` is called as batches finish (for panels).
    """
    hub = session.hub(model)
    wanted = [str(session.repo.resolve(model, v)) for v in versions] if versions else []
    loaded_names = {str(lv.version) for lv in hub.loaded}
    missing = [v for v in wanted if v not in loaded_names]
    if missing:
        if not load_missing:
            raise SessionError(f"{model}: {', '.join(missing)} not loaded")
        load_versions(session, model, missing, activate=False, progress=progress)
    targets = [hub.get(v) for v in wanted] if wanted else hub.loaded
    if not targets:
        raise SessionError(f"no version of {model} is loaded; load some or name them")
    if len(targets) < 2:
        log.info("comparing a single version (%s): latency only", targets[0].version)
    if data is None:
        data = session.repo.sample(model, targets[0].version)
        if not data:
            raise SessionError(f"{model}:{targets[0].version} has no sample input; pass data")
    inputs = coerce_inputs(targets[0].inputs, data)
    rows = len(next(iter(inputs.values())))
    if batch_size < 1:
        raise SessionError("batch size must be at least 1")
    total = math.ceil(rows / batch_size) * len(targets)
    base = {lv: lv.stats()["served"] for lv in targets}

    def done() -> int:
        count = int(sum(lv.stats()["served"] - base[lv] for lv in targets))
        if on_progress is not None:
            on_progress(min(count, total), total)
        return count

    result = run_with_progress(
        lambda: compare(
            hub, inputs, versions=[lv.version for lv in targets], labels=labels, batch_size=batch_size
        ),
        desc=f"compare {model}",
        total=total,
        done=done,
        unit="batch",
        disable=not progress,
    )
    if on_progress is not None:
        on_progress(total, total)
    session.last["compare"] = result
    return result


# -- bench ----------------------------------------------------------------------------


@dataclass
class BenchResult:
    """Latency and throughput of loaded versions under concurrent requests."""

    model: str
    batch_size: int
    concurrency: int
    latencies: dict[str, list[float]] = field(default_factory=dict)  # seconds per request
    wall: dict[str, float] = field(default_factory=dict)  # seconds per version
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for version, seconds in self.latencies.items():
            ms = percentiles(seconds, scale=1000)
            wall = self.wall.get(version, 0.0)
            rows.append(
                {
                    "version": version,
                    "requests": len(seconds),
                    "errors": self.errors.get(version, 0),
                    **{f"{key}_ms": math.nan if value is None else value for key, value in ms.items()},
                    "mean_ms": float(np.mean(seconds)) * 1000 if seconds else math.nan,
                    "requests_per_s": len(seconds) / wall if wall else float("nan"),
                    "rows_per_s": len(seconds) * self.batch_size / wall if wall else float("nan"),
                }
            )
        return pd.DataFrame.from_records(rows).set_index("version")

    def _repr_html_(self) -> str:
        return (
            f"<p>{self.model}: batch {self.batch_size}, {self.concurrency} concurrent</p>"
            + self.table.to_html(float_format=lambda v: f"{v:.4g}")
        )

    def __str__(self) -> str:
        return self.table.to_string()


def bench(
    session: Session,
    model: str,
    versions: Sequence[str],
    *,
    data: Any = None,
    batch_size: int = 8,
    requests: int = 100,
    concurrency: int = 2,
    progress: bool = True,
) -> BenchResult:
    """Send ``requests`` batches to each version from ``concurrency`` threads, one version at a time."""
    if requests < 1 or concurrency < 1 or batch_size < 1:
        raise SessionError("requests, concurrency and batch size must be at least 1")
    hub = session.loaded_hub(model)
    targets = [hub.get(v) for v in versions] if versions else hub.loaded
    if data is None:
        data = session.repo.sample(model, targets[0].version)
    inputs = coerce_inputs(targets[0].inputs, data)
    rows = len(next(iter(inputs.values())))
    reps = math.ceil(batch_size / rows)
    batch = {k: np.concatenate([v] * reps)[:batch_size] for k, v in inputs.items()}
    result = BenchResult(model, batch_size, concurrency)
    counter = [0]
    lock = threading.Lock()

    def one(lv: LoadedVersion) -> None:
        started = time.perf_counter()
        try:
            hub.predict(batch, version=lv.version)
        except Exception:
            with lock:
                result.errors[str(lv.version)] = result.errors.get(str(lv.version), 0) + 1
        else:
            with lock:
                result.latencies[str(lv.version)].append(time.perf_counter() - started)
        finally:
            with lock:
                counter[0] += 1

    def work() -> BenchResult:
        threads = pool(concurrency)  # long-lived: Paddle dislikes predictors run from dying threads
        for lv in targets:
            result.latencies[str(lv.version)] = []
            started = time.perf_counter()
            list(threads.map(one, [lv] * requests))
            result.wall[str(lv.version)] = time.perf_counter() - started
        return result

    out = run_with_progress(
        work,
        desc=f"bench {model}",
        total=requests * len(targets),
        done=lambda: counter[0],
        unit="req",
        disable=not progress,
    )
    session.last["bench"] = out
    return out
