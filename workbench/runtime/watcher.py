"""Polls the repository and follows an alias (or ``latest``) into the hub.

Polling, not inotify: it works on NFS and bind mounts. When the followed alias
points at a new version, the watcher loads, verifies and warms it on its own
thread, then swaps it in. A version that fails leaves the active one serving,
is reported as an event, and is not retried until its files change: the watcher
keeps a fingerprint of each refused version's files (names, sizes, mtimes, the
manifest and signature included), so signing it later or completing its copy
brings it in, even though the manifest did not change.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError
from workbench.runtime.hub import HubEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench.model.version import Version
    from workbench.runtime.hub import VersionHub

log = logging.getLogger(__name__)


class RepositoryWatcher:
    """Watch ``hub``'s model in its repository every ``interval`` seconds."""

    def __init__(
        self,
        hub: VersionHub,
        *,
        interval: float = 3.0,
        follow: str | None = "latest",
        unload_previous: bool = False,
        on_event: Callable[[HubEvent], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.hub = hub
        self.interval = interval
        self.follow = follow
        self.unload_previous = unload_previous
        self.events: list[HubEvent] = []
        self._on_event = on_event
        self._seen: set[Version] = set(hub.repository.versions(hub.model))
        self._fingerprint: tuple[object, ...] | None = None
        self._failed: dict[Version, tuple[object, ...]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RepositoryWatcher:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("watcher is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.hub.model}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("watcher poll failed")
            self._stop.wait(self.interval)

    def _emit(self, kind: str, version: Version | str, message: str = "") -> HubEvent:
        event = HubEvent(kind, self.hub.model, str(version), message)
        self.events.append(event)
        log.info("watcher: %s", event)
        if self._on_event is not None:
            self._on_event(event)
        return event

    def poll(self) -> list[HubEvent]:
        """Look once; returns the events this poll produced."""
        repo, model = self.hub.repository, self.hub.model
        fingerprint = repo.fingerprint(model)
        if fingerprint == self._fingerprint and not self._refused_changed():
            return []
        self._fingerprint = fingerprint
        produced: list[HubEvent] = []
        versions = set(repo.versions(model))
        for version in sorted(versions - self._seen):
            produced.append(self._emit("discovered", version))
        self._seen = versions
        if self.follow is None:
            return produced
        try:
            target = repo.resolve(model, self.follow)
        except WorkbenchError as exc:
            produced.append(self._emit("follow_failed", self.follow, str(exc)))
            return produced
        active = self.hub.active
        if active is not None and active.version == target:
            return produced
        self._failed = {v: s for v, s in self._failed.items() if v in versions}
        stamp = repo.version_fingerprint(model, target)
        if self._failed.get(target) == stamp:
            return produced
        previous = active.version if active is not None else None
        try:
            self.hub.load(target, activate=True)
        except WorkbenchError as exc:
            self._failed[target] = stamp
            produced.append(self._emit("load_failed", target, str(exc)))
            return produced
        self._failed.pop(target, None)
        produced.append(self._emit("swapped", target, f"following {self.follow}"))
        if self.unload_previous and previous is not None and previous != target:
            try:
                self.hub.unload(previous)
            except WorkbenchError as exc:
                log.warning("could not unload %s:%s: %s", model, previous, exc)
        return produced

    def _refused_changed(self) -> bool:
        """Whether a file of a version refused earlier changed (signed later, copy completed)."""
        repo, model = self.hub.repository, self.hub.model
        return any(repo.version_fingerprint(model, v) != stamp for v, stamp in self._failed.items())

    def __enter__(self) -> RepositoryWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
