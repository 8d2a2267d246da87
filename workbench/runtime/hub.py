"""The version hub: the loaded versions of one model and the active reference.

A request takes the active reference once, at its start (:meth:`VersionHub.lease`),
so switching is a single assignment and in-flight requests finish on the version
they started with. Unloading waits for a version's in-flight requests to drain.
A history stack of previously active versions gives :meth:`rollback`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workbench.errors import HubError, VersionNotLoadedError
from workbench.model.manifest import PIPELINE_KIND
from workbench.model.version import Version
from workbench.runtime.device import Device
from workbench.runtime.loaded import LoadedVersion
from workbench.runtime.pipeline import LoadedPipeline
from workbench.runtime.stages import SharedStages

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench._types import Tensors, TensorsIn
    from workbench.model.manifest import Manifest
    from workbench.model.pipeline import Stage
    from workbench.model.repository import ModelRepository

log = logging.getLogger(__name__)
HISTORY_LIMIT = 32


@dataclass(frozen=True)
class HubEvent:
    """Something that happened to a hub: loaded, activated, rolled_back, unloaded, load_failed,
    worker_died, worker_restarted, worker_restart_failed (process isolation)."""

    kind: str
    model: str
    version: str
    message: str = ""
    time: float = field(default_factory=time.time)

    def __str__(self) -> str:
        return f"{self.kind} {self.model}:{self.version}" + (f" — {self.message}" if self.message else "")


@dataclass(frozen=True)
class Prediction:
    """Outputs of one request and the version that produced them."""

    version: Version
    outputs: Tensors
    seconds: float


ISOLATIONS = ("process", "thread")


def _isolation(name: str, device: Device) -> str:
    """``process`` or ``thread``; ``auto`` is process on a GPU, thread on the CPU."""
    if name == "auto":
        return "process" if device.is_gpu else "thread"
    if name not in ISOLATIONS:
        raise ValueError(f"isolation must be process, thread or auto, not {name!r}")
    return name


class VersionHub:
    """Loaded versions of one model, one of them active; thread-safe."""

    def __init__(
        self,
        repository: ModelRepository,
        model: str,
        *,
        device: str | Device = "auto",
        workers: int = 1,
        cpu_threads: int = 1,
        memory_pool_mb: int | None = None,
        warmup_batch_sizes: tuple[int, ...] = (),
        isolation: str = "auto",
    ) -> None:
        """``warmup_batch_sizes``: batch sizes each version runs before it is offered
        (default: 1, 2, 4, ... up to the sample's rows); a server with dynamic
        batching passes the sizes its batcher produces.

        ``isolation``: ``process`` (each version in its own worker processes; this
        process never imports Paddle), ``thread`` (predictors in this process), or
        ``auto`` (process on a GPU, thread on the CPU); a load may choose its own."""
        repository.versions(model)  # raises ModelNotFoundError early
        self.repository = repository
        self.model = model
        self.device = Device.parse(device, memory_pool_mb=memory_pool_mb)
        self.isolation = _isolation(isolation, self.device)
        self.workers = workers
        self.cpu_threads = cpu_threads
        self.warmup_batch_sizes = tuple(warmup_batch_sizes)
        self._versions: dict[Version, LoadedVersion] = {}
        self._loading: set[Version] = set()
        self._active: LoadedVersion | None = None
        self._history: list[Version] = []
        self.stages = SharedStages()  # the stage versions of loaded pipelines, each loaded once
        self._lock = threading.RLock()
        self._listeners: list[Callable[[HubEvent], None]] = []
        self._closed = False

    def __repr__(self) -> str:
        active = self._active.version if self._active else None
        return f"<VersionHub {self.model} active={active} loaded={[str(v) for v in self._versions]}>"

    # -- events ----------------------------------------------------------------------

    def subscribe(self, callback: Callable[[HubEvent], None]) -> Callable[[], None]:
        """Call ``callback`` with every HubEvent; returns a function that unsubscribes."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _emit(self, kind: str, version: Version | str, message: str = "") -> None:
        event = HubEvent(kind, self.model, str(version), message)
        log.info("%s", event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("hub listener failed on %s", event)

    # -- loading ---------------------------------------------------------------------

    def load(
        self,
        ref: Version | str | None = None,
        *,
        device: str | Device | None = None,
        memory_pool_mb: int | None = None,
        workers: int | None = None,
        activate: bool | None = None,
        verify: bool = True,
        isolation: str | None = None,
    ) -> LoadedVersion:
        """Load, verify and warm a version; it becomes active if ``activate`` (default: if none is).

        Loading an already-loaded version returns it (and activates it if asked).
        On failure the active version stays in place and a ``load_failed`` event is emitted.
        """
        self._check_open()
        version = self.repository.resolve(self.model, ref)
        with self._lock:
            existing = self._versions.get(version)
            if existing is None and version in self._loading:
                raise HubError(f"{self.model}:{version} is being loaded already")
            if existing is None:
                self._loading.add(version)
        if existing is not None:
            if activate:
                self.use(version)
            return existing
        try:
            loaded = self._open(version, device, memory_pool_mb, workers, verify, isolation)
        except Exception as exc:
            self._emit("load_failed", version, str(exc))
            raise
        finally:
            with self._lock:
                self._loading.discard(version)
        with self._lock:
            self._versions[version] = loaded
            make_active = activate if activate is not None else self._active is None
        self._emit("loaded", version, f"on {loaded.device} in {loaded.load_seconds:.2f}s")
        if make_active:
            self.use(version)
        return loaded

    def _open(
        self,
        version: Version,
        device: str | Device | None,
        memory_pool_mb: int | None,
        workers: int | None,
        verify: bool,
        isolation: str | None,
    ) -> LoadedVersion:
        dev = Device.parse(device, memory_pool_mb=memory_pool_mb) if device is not None else self.device
        mode = _isolation(isolation, dev) if isolation is not None else self.isolation
        if self.repository.kind(self.model, version) == PIPELINE_KIND:
            return self._open_pipeline(version, dev, workers or self.workers, verify, mode)
        if verify:
            manifest = self.repository.verify(self.model, version)
        else:
            manifest = self.repository.manifest(self.model, version)
        return self._open_version(
            self.model, version, manifest, dev, workers or self.workers, mode,
            self.warmup_batch_sizes, lambda kind, message: self._emit(kind, version, message),
        )

    def _open_version(
        self,
        model: str,
        version: Version,
        manifest: Manifest,
        device: Device,
        workers: int,
        mode: str,
        warmup_batch_sizes: tuple[int, ...],
        on_event: Callable[[str, str], None],
    ) -> LoadedVersion:
        path = self.repository.path(model, version)
        if mode == "process":
            from workbench.runtime.isolated import ProcessLoadedVersion

            return ProcessLoadedVersion(
                model=model, version=version, manifest=manifest, path=path, device=device,
                workers=workers, cpu_threads=self.cpu_threads,
                warmup_batch_sizes=warmup_batch_sizes, on_event=on_event,
            ).open()
        return LoadedVersion(
            model=model, version=version, manifest=manifest, path=path, device=device,
            workers=workers, cpu_threads=self.cpu_threads, warmup_batch_sizes=warmup_batch_sizes,
        ).open()

    def _open_pipeline(
        self, version: Version, device: Device, workers: int, verify: bool, mode: str
    ) -> LoadedPipeline:
        """A pipeline version with its stage versions loaded (see runtime/pipeline.py); with
        ``verify``, its signature, every stage and every stage's pinned manifest are checked."""
        if verify:
            pipeline = self.repository.verify_pipeline(self.model, version)
        else:
            pipeline = self.repository.pipeline(self.model, version)

        def open_stage(stage: Stage, warmup_batch_sizes: tuple[int, ...]) -> LoadedVersion:
            stage_version = Version.parse(stage.version)
            manifest = self.repository.manifest(stage.model, stage_version)

            def on_event(kind: str, message: str) -> None:
                self._emit(kind, version, f"{stage.role} stage {stage.ref}: {message}")

            return self.stages.acquire(stage.ref, lambda: self._open_version(
                stage.model, stage_version, manifest, device, workers, mode,
                warmup_batch_sizes, on_event,
            ))

        return LoadedPipeline(
            model=self.model, version=version, pipeline=pipeline,
            path=self.repository.path(self.model, version), device=device, open_stage=open_stage,
            close_stage=self.stages.release,
        ).open()

    def unload(self, ref: Version | str, *, timeout: float = 30.0) -> None:
        """Drain and free a loaded version; the active version cannot be unloaded."""
        with self._lock:
            loaded = self._get(ref)
            if loaded is self._active:
                raise HubError(
                    f"{self.model}:{loaded.version} is active; switch to another version before "
                    "unloading it"
                )
            del self._versions[loaded.version]
            self._history = [v for v in self._history if v != loaded.version]
        try:
            loaded.close(timeout=timeout)
        except HubError:
            with self._lock:  # still serving its in-flight requests: keep it registered
                self._versions[loaded.version] = loaded
            raise
        self._emit("unloaded", loaded.version)

    # -- switching -------------------------------------------------------------------

    def use(self, ref: Version | str) -> LoadedVersion:
        """Make a loaded version active: one assignment; in-flight requests are unaffected.

        Just before the assignment the version runs one small batch on each idle
        predictor (:meth:`LoadedVersion.prime`), outside the hub's lock, so the first
        request after the switch finds it as warm as the thousandth.
        """
        with self._lock:
            loaded = self._get(ref)
            if loaded is self._active:
                return loaded
        loaded.prime()
        with self._lock:
            if self._versions.get(loaded.version) is not loaded:  # unloaded meanwhile
                loaded = self._get(loaded.version)
            previous = self._active
            if previous is loaded:
                return loaded
            self._active = loaded
            if previous is not None:
                self._history.append(previous.version)
                del self._history[:-HISTORY_LIMIT]
        self._emit("activated", loaded.version, f"was {previous.version}" if previous else "")
        return loaded

    def rollback(self) -> LoadedVersion:
        """Return to the most recent previously active version that is still loaded."""
        with self._lock:
            candidates = [self._versions.get(v) for v in reversed(self._history)]
            upcoming = next((lv for lv in candidates if lv is not None and lv is not self._active), None)
        if upcoming is not None:
            upcoming.prime()  # as in use(): warm, outside the lock, before the switch
        with self._lock:
            while self._history:
                version = self._history.pop()
                target = self._versions.get(version)
                if target is not None and target is not self._active:
                    previous = self._active
                    self._active = target
                    break
            else:
                raise HubError(f"{self.model}: nothing to roll back to (no earlier active version loaded)")
        self._emit("rolled_back", target.version, f"from {previous.version}" if previous else "")
        return target

    # -- requests --------------------------------------------------------------------

    @contextmanager
    def lease(self, ref: Version | str | None = None) -> Iterator[LoadedVersion]:
        """Take the active (or a pinned) version once and count the request in flight."""
        loaded = self.take(ref)
        try:
            yield loaded
        finally:
            loaded.release()

    def take(self, ref: Version | str | None = None) -> LoadedVersion:
        """:meth:`lease` without the context manager: the caller must ``release()`` it."""
        with self._lock:
            loaded = self._get(ref) if ref is not None else self._active
            if loaded is None:
                raise HubError(f"{self.model}: no version is active; load one first")
            loaded.acquire()
        return loaded

    def predict(self, inputs: TensorsIn, *, version: Version | str | None = None) -> Prediction:
        """Run ``inputs`` on the active version (or a pinned one)."""
        with self.lease(version) as loaded:
            started = time.perf_counter()
            outputs = loaded.predict(inputs)
            return Prediction(loaded.version, outputs, time.perf_counter() - started)

    # -- inspection ------------------------------------------------------------------

    @property
    def active(self) -> LoadedVersion | None:
        return self._active

    @property
    def loaded(self) -> list[LoadedVersion]:
        with self._lock:
            return [self._versions[v] for v in sorted(self._versions)]

    @property
    def history(self) -> list[Version]:
        """Previously active versions, most recent last."""
        with self._lock:
            return list(self._history)

    def get(self, ref: Version | str) -> LoadedVersion:
        with self._lock:
            return self._get(ref)

    def _get(self, ref: Version | str | LoadedVersion) -> LoadedVersion:
        if isinstance(ref, LoadedVersion):
            ref = ref.version
        if isinstance(ref, str) and not Version.is_version(ref):
            ref = self.repository.resolve(self.model, ref)
        try:
            version = Version.parse(ref)
        except ValueError as exc:
            raise VersionNotLoadedError(str(exc)) from exc
        loaded = self._versions.get(version)
        if loaded is None:
            names = ", ".join(str(v) for v in sorted(self._versions)) or "none"
            raise VersionNotLoadedError(f"{self.model}:{version} is not loaded (loaded: {names})")
        return loaded

    def __contains__(self, ref: object) -> bool:
        try:
            self.get(ref)  # type: ignore[arg-type]
        except (VersionNotLoadedError, LookupError):
            return False
        return True

    # -- shutdown --------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Drain and unload every version, the active one last."""
        with self._lock:
            self._closed = True
            versions = [lv for lv in self._versions.values() if lv is not self._active]
            if self._active is not None:
                versions.append(self._active)
            self._versions.clear()
            self._active = None
        for loaded in versions:
            loaded.close(timeout=timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise HubError(f"the hub of {self.model} is closed")

    def __enter__(self) -> VersionHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
