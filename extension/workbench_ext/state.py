"""The per-kernel session: one model repository, one version hub per model, served processes.

The magics and the panels share one :class:`Session` per IPython shell, so a
version loaded with ``%paddle load`` shows up in the version panel and a click
in the panel is what ``%paddle list`` reports next.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench import ModelRepository, Settings, Version, VersionHub
from workbench_ext.errors import SessionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench import HubEvent
    from workbench_ext.served import ServedModel

__all__ = ["Session", "SessionError", "drop_session", "get_session"]

log = logging.getLogger(__name__)


class Session:
    """What one kernel has open: the repository, a hub per model, served models, deployments."""

    def __init__(
        self,
        repo: str | Path | None = None,
        *,
        device: str = "auto",
        workers: int = 1,
        home: str | Path | None = None,
    ) -> None:
        settings = Settings.from_env()
        self.home = Path(home) if home is not None else settings.home
        self._verify_key = settings.verify_key
        self.repo = ModelRepository(
            Path(repo) if repo is not None else settings.repo, verify_key=self._verify_key
        )
        self.device = device
        self.workers = workers
        self.default_model: str | None = None
        self.hubs: dict[str, VersionHub] = {}
        self.servers: dict[int, ServedModel] = {}
        self.last: dict[str, Any] = {}  # the last result per verb (e.g. "compare")
        self._deployments: Any = None
        self._lock = threading.RLock()
        self._listeners: list[Callable[[HubEvent], None]] = []
        self._unsubscribe: dict[str, Callable[[], None]] = {}

    def __repr__(self) -> str:
        loaded = {m: [str(lv.version) for lv in h.loaded] for m, h in self.hubs.items()}
        return f"<workbench Session repo={str(self.repo.root)!r} loaded={loaded}>"

    # -- repository ------------------------------------------------------------------

    def set_repo(self, path: str | Path) -> ModelRepository:
        """Point the session at another repository; hubs of the old one are closed."""
        root = Path(path).expanduser()
        if root.resolve() == self.repo.root.resolve():
            return self.repo
        self.close_hubs()
        self.repo = ModelRepository(root, verify_key=self._verify_key)
        self.default_model = None
        self._deployments = None  # new deployments serve from this repository
        return self.repo

    def model(self, name: str | None = None) -> str:
        """The model meant: ``name``, else the one last used, else the only one in the repository."""
        if name:
            return name
        if self.default_model:
            return self.default_model
        models = self.repo.models()
        if len(models) == 1:
            return models[0]
        if not models:
            raise SessionError(
                f"the repository {self.repo.root} has no models; point at one with "
                "`%paddle repo PATH` or build the demo models with `%paddle repo --demo`"
            )
        raise SessionError(
            f"which model? the repository has {', '.join(models)}; name one (e.g. {models[0]}:1.0.0)"
        )

    def parse(self, text: str | None, *, model: str | None = None) -> tuple[str, str | None]:
        """Split ``digits@stable``, ``digits:1.0.0``, ``digits`` or a bare ``1.0.0``/``stable``.

        A bare word that names a model in the repository is a model; otherwise it is a
        version or alias of the current model. Returns ``(model, ref or None)``.
        """
        if not text:
            return self.model(model), None
        for sep in ("@", ":"):
            if sep in text:
                name, _, ref = text.partition(sep)
                if not name or not ref:
                    raise SessionError(f"invalid model reference {text!r}: expected model{sep}ref")
                return name, ref
        if model is None and not Version.is_version(text) and text in self.repo.models():
            return text, None
        return self.model(model), text

    def resolve(self, text: str | None, *, model: str | None = None) -> tuple[str, Version]:
        name, ref = self.parse(text, model=model)
        return name, self.repo.resolve(name, ref)

    # -- hubs ------------------------------------------------------------------------

    def hub(self, model: str | None = None, *, create: bool = True) -> VersionHub:
        """The hub of ``model`` (created on first use)."""
        name = self.model(model)
        with self._lock:
            hub = self.hubs.get(name)
            if hub is None:
                if not create:
                    raise SessionError(f"no version of {name} is loaded; load one with `%paddle load {name}`")
                hub = VersionHub(self.repo, name, device=self.device, workers=self.workers)
                self.hubs[name] = hub
                self._unsubscribe[name] = hub.subscribe(self._forward)
            self.default_model = name
            return hub

    def loaded_hub(self, model: str | None = None) -> VersionHub:
        """The hub of ``model`` if it has loaded versions (SessionError otherwise)."""
        hub = self.hub(model, create=False)
        if not hub.loaded:
            raise SessionError(
                f"no version of {hub.model} is loaded; load one with `%paddle load {hub.model}`"
            )
        return hub

    def subscribe(self, callback: Callable[[HubEvent], None]) -> Callable[[], None]:
        """Call ``callback`` with the events of every hub of this session."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def _forward(self, event: HubEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("session listener failed on %s", event)

    # -- deployments -----------------------------------------------------------------

    @property
    def deployments(self) -> Any:
        """The DeploymentManager of this workbench home (created on first use)."""
        if self._deployments is None:
            from workbench.deploy import DeploymentManager

            self._deployments = DeploymentManager(self.home, repo=self.repo.root)
        return self._deployments

    # -- shutdown --------------------------------------------------------------------

    def close_hubs(self) -> None:
        with self._lock:
            hubs, self.hubs = self.hubs, {}
            unsubscribe, self._unsubscribe = self._unsubscribe, {}
        for stop in unsubscribe.values():
            stop()
        for hub in hubs.values():
            try:
                hub.close(timeout=10.0)
            except Exception:
                log.exception("closing the hub of %s failed", hub.model)

    def close(self) -> None:
        """Stop served models and free every loaded version."""
        for served in list(self.servers.values()):
            try:
                served.stop()
            except Exception:
                log.exception("stopping %s failed", served)
        self.servers.clear()
        self.close_hubs()


_SESSIONS: dict[int, Session] = {}


def get_session(shell: Any = None) -> Session:
    """The session of ``shell`` (default: the running IPython shell, or a process-wide one)."""
    if shell is None:
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:
            shell = None
    key = id(shell)
    session = _SESSIONS.get(key)
    if session is None:
        session = _SESSIONS[key] = Session()
    return session


def drop_session(shell: Any) -> None:
    """Close and forget the session of ``shell``."""
    session = _SESSIONS.pop(id(shell), None)
    if session is not None:
        session.close()
