"""The persisted truth of each deployment: one JSON file, one file lock.

Layout under the workbench home::

    $WORKBENCH_HOME/deployments/<name>/state.json       the DeploymentState
    $WORKBENCH_HOME/deployments/<name>/state.json.lock  held while a process changes it
    $WORKBENCH_HOME/deployments/<name>/router/          nginx's workdir
    $WORKBENCH_HOME/deployments/<name>/instances/       the process backend's records and logs

Writers take the lock, read, change and write back (:meth:`StateStore.transaction`),
so two processes acting on one deployment at once lose no update. Writes go to a
temporary file that is fsynced and renamed over the old one, so a reader without the
lock never sees half a file. The notebook, an SSH shell and a restarted process all
read the same file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock
from filelock import Timeout as LockTimeout

from workbench._fs import cannot_write, write_atomic
from workbench.deploy.backend import InstanceSpec
from workbench.deploy.canary_state import CanaryState
from workbench.deploy.fleet import Engine, check_fleet
from workbench.deploy.history import HistoryEntry, actor, face
from workbench.deploy.names import COLORS, check_deployment_name
from workbench.deploy.records import InstanceRecord, InstanceSet, record_color
from workbench.deploy.rollout.phases import Rollout
from workbench.errors import DeployValueError, StateCorruptError, StateError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from workbench._types import Color, StrPath

log = logging.getLogger(__name__)

SCHEMA = 1
MAX_HISTORY = 1000
STATE_FILE = "state.json"
ADMIN_TOKEN_FILE = "admin.token"
LOCK_FILE = STATE_FILE + ".lock"  # flock'ed by FileLock, and by the brake (cli/brake.py)
PREVIOUS_FILE = "state.json.prev"  # the state before the last write


#: Per thread: the locks it holds, and how deep (a store's lock is re-entrant).
_held = threading.local()


@contextlib.contextmanager
def reentrant(key: str, acquire: Callable[[], contextlib.AbstractContextManager[None]]) -> Iterator[None]:
    """Hold the lock ``key`` through ``acquire()``, or join it when this thread holds it
    already: a transaction opened inside another (the canary controller's read-decide-save
    around a deployment's action) must not wait on itself. Every store's ``lock`` uses it."""
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    with acquire():
        depth[key] = 1
        try:
            yield
        finally:
            depth.pop(key, None)


def default_home() -> Path:
    """The workbench home from the environment (``WORKBENCH_HOME``, default ``~/.workbench``)."""
    from workbench.settings import Settings

    return Settings.from_env().home


@dataclass(frozen=True)
class Plan:
    """What the current rollout deploys: the candidate's version and port, and how to verify it."""

    version: str
    port: int
    sample_file: str | None = None  # extra agreement inputs (.npz or .npy)
    min_agreement: float = 0.0  # top-1 agreement the candidate needs to pass

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise DeployValueError(f"port must be in 1..65535, not {self.port}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise DeployValueError(f"min_agreement must be in 0..1, not {self.min_agreement}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "port": self.port,
            "sample_file": self.sample_file,
            "min_agreement": self.min_agreement,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        sample = data.get("sample_file")
        return cls(
            version=str(data["version"]),
            port=int(data["port"]),
            sample_file=None if sample is None else str(sample),
            min_agreement=float(data.get("min_agreement", 0.0)),
        )


@dataclass(frozen=True)
class DeploymentState:
    """Everything persisted about one deployment."""

    name: str
    model: str
    repo: str
    port: int  # the router's public port
    host: str = "127.0.0.1"  # the router's listen address
    backend: str = "process"
    backend_options: Mapping[str, str] = field(default_factory=dict)
    router: str = "process"  # where the router's nginx runs: "process" | "docker"
    device: str = "cpu"
    workers: int = 1
    rollout: Rollout = field(default_factory=Rollout)
    #: Each colour's instances; an InstanceRecord given here is read as a set of one.
    instances: Mapping[Color, InstanceSet] = field(default_factory=dict)
    #: The engines a colour spans; empty: one instance on the backend's default engine.
    fleet: tuple[Engine, ...] = ()
    #: Instances of a colour that must be ready for it to be ready; 0: all of them.
    min_ready: int = 0
    plan: Plan | None = None  # the current (or last) rollout's target
    agreement: Mapping[str, Any] | None = None  # the last output-agreement report
    canary: CanaryState | None = None  # the canary: its spec and controller's status
    history: tuple[HistoryEntry, ...] = ()
    revision: int = 0  # bumped on every write
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        check_deployment_name(self.name)
        if not 0 < self.port < 65536:
            raise DeployValueError(f"port must be in 1..65535, not {self.port}")
        sets = {}
        for color, records in self.instances.items():
            group = InstanceSet.of(records)  # type: ignore[arg-type]  # a record: a set of one
            if group.color != color:
                raise ValueError(f"instance recorded under {color} is {group.color}")
            sets[color] = group
        object.__setattr__(self, "instances", sets)
        object.__setattr__(self, "fleet", check_fleet(self.fleet))
        if isinstance(self.min_ready, bool) or not isinstance(self.min_ready, int) or (
            self.min_ready < 0
        ):
            raise DeployValueError(f"min_ready must be a non-negative integer, not {self.min_ready!r}")

    # -- derived views -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The public endpoint (the router)."""
        return f"http://{self.host}:{self.port}"

    @property
    def phase(self) -> str:
        return self.rollout.phase.value

    @property
    def stable(self) -> InstanceSet | None:
        return self.instances.get(self.rollout.stable)

    @property
    def candidate(self) -> InstanceSet | None:
        return self.instances.get(self.rollout.candidate)

    @property
    def engines(self) -> tuple[Engine, ...]:
        """The engines a colour spans (one implicit engine when none were given)."""
        return self.fleet or (Engine(""),)

    @property
    def replicas(self) -> int:
        """How many instances each colour runs."""
        return sum(e.replicas for e in self.engines)

    def needed(self, total: int | None = None) -> int:
        """Ready instances a colour needs (of ``total``, default :attr:`replicas`)."""
        total = self.replicas if total is None else total
        return min(total, self.min_ready) if self.min_ready else total

    def records(self, color: Color | None = None) -> list[InstanceRecord]:
        """Every instance (of ``color``), blue first."""
        return [r for c in COLORS if color in (None, c) for r in self.instances.get(c, ())]

    @property
    def live(self) -> InstanceSet | None:
        """The instance that takes most of the traffic."""
        return self.instances.get(self.rollout.live)

    @property
    def weights(self) -> dict[str, int]:
        """Traffic share per running colour (a colour with no instance gets nothing)."""
        weights = self.rollout.weights
        return {c: weights[c] for c in COLORS if c in self.instances}

    @property
    def stable_version(self) -> str | None:
        record = self.stable
        return record.version if record else None

    @property
    def candidate_version(self) -> str | None:
        record = self.candidate
        return record.version if record else None

    def instance_spec(
        self,
        color: Color,
        version: str,
        port: int,
        *,
        host: str = "127.0.0.1",
        admin_token: str | None = None,
        engine: str = "",
        replica: int = 0,
    ) -> InstanceSpec:
        """What a backend starts for ``color`` serving ``version`` on ``port``."""
        return InstanceSpec(
            deployment=self.name,
            color=color,
            model=self.model,
            version=version,
            repo=self.repo,
            port=port,
            host=host,
            device=self.device,
            workers=self.workers,
            admin_token=admin_token,
            env=(("WORKBENCH_LOG_FORMAT", "json"),),  # version-tagged JSON lines
            engine=engine,
            replica=replica,
        )

    def instance_specs(
        self, color: Color, version: str, port: int, *, admin_token: str | None = None
    ) -> list[InstanceSpec]:
        """What a colour runs: on each engine, ``replicas`` instances on ``port``, ``port + 1``, ...

        Each binds (host networking) and is recorded at its engine's publish address.
        """
        return [
            self.instance_spec(color, version, port + k, host=engine.address,
                               admin_token=admin_token, engine=engine.url, replica=k)
            for engine in self.engines
            for k in range(engine.replicas)
        ]

    def with_instance(self, record: InstanceRecord) -> DeploymentState:
        """This state with ``record`` as its colour's only instance."""
        return self.with_instances([record])

    def with_instances(self, records: Iterable[InstanceRecord]) -> DeploymentState:
        """This state with ``records`` (one colour's) as that colour's instances."""
        group = InstanceSet.of(records)
        return replace(self, instances={**self.instances, group.color: group})

    def without_instance(self, color: Color) -> DeploymentState:
        return replace(self, instances={c: r for c, r in self.instances.items() if c != color})

    def record(
        self,
        action: str,
        outcome: str = "ok",
        reason: str = "",
        *,
        now: float | None = None,
        details: Mapping[str, Any] | None = None,
        by: str | None = None,
    ) -> DeploymentState:
        """Return this state with a history entry appended (versions and phase as they are now;
        ``by``: the face that acted, default this process's :func:`face`)."""
        entry = HistoryEntry(
            time=time.time() if now is None else now,
            action=action,
            outcome=outcome,
            stable_version=self.stable_version,
            candidate_version=self.candidate_version,
            phase=self.phase,
            weights=dict(self.weights),
            reason=reason,
            actor=actor(),
            details=dict(details or {}),
            by=by or face(),
            stable_color=self.rollout.stable,
        )
        return replace(self, history=(*self.history, entry)[-MAX_HISTORY:])

    def amend(
        self,
        action: str,
        *,
        since: float,
        details: Mapping[str, Any],
        by: str,
        outcome: str | None = None,
        reason: str = "",
    ) -> DeploymentState:
        """Return this state with ``details`` and ``by`` added to its last entry when that is
        ``action`` recorded at or after ``since`` (one entry per action: the controller's
        verdicts join the weight, promote or rollback entry its change recorded); else with
        a new entry for ``action``."""
        last = self.history[-1] if self.history else None
        if last is None or last.action != action or last.time < since:
            return self.record(action, outcome or "ok", reason, details=details, by=by)
        merged = replace(last, details={**last.details, **details}, by=by,
                         outcome=outcome or last.outcome, reason=reason or last.reason)
        return replace(self, history=(*self.history[:-1], merged))

    # -- JSON ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "model": self.model,
            "repo": self.repo,
            "host": self.host,
            "port": self.port,
            "url": self.url,
            "backend": self.backend,
            "backend_options": dict(self.backend_options),
            "router": self.router,
            "device": self.device,
            "workers": self.workers,
            "rollout": self.rollout.to_dict(),
            "weights": dict(self.weights),
            "instances": {c: [r.to_dict() for r in g] for c, g in self.instances.items()},
            "fleet": [e.to_dict() for e in self.fleet],
            "min_ready": self.min_ready,
            "plan": None if self.plan is None else self.plan.to_dict(),
            "agreement": None if self.agreement is None else dict(self.agreement),
            "canary": None if self.canary is None else self.canary.to_dict(),
            "history": [h.to_dict() for h in self.history],
            "revision": self.revision,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentState:
        if not isinstance(data, dict):
            raise TypeError(f"a JSON object expected, not {type(data).__name__}")
        schema = data.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise StateError(f"unsupported deployment state schema {schema!r} (expected {SCHEMA})")
        agreement = data.get("agreement")
        plan = data.get("plan")
        return cls(
            name=str(data["name"]),
            model=str(data["model"]),
            repo=str(data["repo"]),
            host=str(data.get("host", "127.0.0.1")),
            port=int(data["port"]),
            backend=str(data.get("backend", "process")),
            backend_options={
                str(k): str(v) for k, v in dict(data.get("backend_options", {})).items()
            },
            router=str(data.get("router", "process")),
            device=str(data.get("device", "cpu")),
            workers=int(data.get("workers", 1)),
            rollout=Rollout.from_dict(data["rollout"]),
            instances={
                record_color(c): InstanceSet.of(
                    # one object per colour: written before a colour could span engines
                    [InstanceRecord.from_dict(r)] if isinstance(r, dict)
                    else [InstanceRecord.from_dict(x) for x in r]
                )
                for c, r in dict(data.get("instances", {})).items()
            },
            fleet=tuple(Engine.from_dict(e) for e in data.get("fleet") or ()),
            min_ready=int(data.get("min_ready", 0)),
            plan=None if plan is None else Plan.from_dict(plan),
            agreement=None if agreement is None else dict(agreement),
            canary=None if data.get("canary") is None else CanaryState.from_dict(data["canary"]),
            history=tuple(HistoryEntry.from_dict(h) for h in data.get("history", [])),
            revision=int(data.get("revision", 0)),
            created_at=float(data.get("created_at", 0.0)),
            updated_at=float(data.get("updated_at", 0.0)),
        )


def parse_state(name: str, where: object, text: str) -> DeploymentState:
    """The state of deployment ``name`` from its JSON ``text`` read at ``where`` (a file,
    a ConfigMap); StateCorruptError saying how to recover if it is unreadable."""
    try:
        return DeploymentState.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateCorruptError(
            f"the state of deployment {name!r} ({where}) is unreadable ({exc}); "
            f"`workbench deploy restore {name}` brings back the previous state, "
            f"`workbench deploy delete {name} --force` removes the deployment"
        ) from exc


class Transaction:
    """A locked read-modify-write of one deployment's state (see StateStore.transaction)."""

    def __init__(self, store: StateStore, name: str, state: DeploymentState | None) -> None:
        self._store = store
        self.name = name
        self._state = state
        self.saved = False

    @property
    def exists(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> DeploymentState:
        if self._state is None:
            raise StateError(f"no deployment named {self.name!r}")
        return self._state

    def save(self, state: DeploymentState) -> DeploymentState:
        """Write ``state`` (revision bumped) while the lock is held; return what was written."""
        if state.name != self.name:
            raise StateError(f"transaction for {self.name!r} cannot save {state.name!r}")
        previous = self._state.revision if self._state is not None else 0
        now = time.time()
        state = replace(
            state,
            revision=previous + 1,
            updated_at=now,
            created_at=state.created_at or now,
        )
        self._store._write(state)
        self._state = state
        self.saved = True
        return state


class StateStore:
    """Deployment states under ``<home>/deployments``, one JSON file and lock each."""

    def __init__(self, home: StrPath | None = None, *, lock_timeout: float = 60.0) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.root = self.home / "deployments"
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"StateStore({str(self.root)!r})"

    def directory(self, name: str) -> Path:
        """The deployment's directory (state, router workdir, instance logs)."""
        return self.root / check_deployment_name(name)

    def path(self, name: str) -> Path:
        return self.directory(name) / STATE_FILE

    def admin_token(self, name: str) -> str:
        """The bearer token of the deployment's instances' admin API, made on first use.

        Kept beside the state (0600), never in it, so ``status --json`` and the history do
        not show it. The canary analysis uses it to read the stable instance's reservoir of
        recent request inputs.
        """
        import secrets

        path = self.directory(name) / ADMIN_TOKEN_FILE
        with contextlib.suppress(FileNotFoundError):
            token = path.read_text().strip()
            if token:
                return token
        token = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, token + "\n", mode=0o600)
        return token

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{STATE_FILE}"))

    def load(self, name: str) -> DeploymentState:
        """Read the state without the lock (writes are atomic renames)."""
        path = self.path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StateError(f"no deployment named {name!r} (looked in {self.root})") from None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc}") from exc
        return parse_state(name, path, text)

    def load_previous(self, name: str) -> DeploymentState | None:
        """The state before the last write (kept beside it), or None if there is none usable."""
        try:
            text = (self.directory(name) / PREVIOUS_FILE).read_text(encoding="utf-8")
            return DeploymentState.from_dict(json.loads(text))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def recover(self, name: str) -> DeploymentState:
        """Put the previous state back over an unreadable one (call with the lock held)."""
        previous = self.load_previous(name)
        if previous is None:
            raise StateCorruptError(
                f"the state of deployment {name!r} is unreadable and no earlier copy is usable; "
                f"`workbench deploy delete {name} --force` removes the deployment"
            )
        self._write(previous, keep_previous=False)
        log.warning("%s: recovered the previous state (revision %d)", name, previous.revision)
        return previous

    def all(self) -> list[DeploymentState]:
        states = []
        for name in self.names():
            try:
                states.append(self.load(name))
            except StateError as exc:
                log.warning("skipping %s: %s", name, exc)
        return states

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the deployment's file lock (StateError if another process holds it too long).

        Re-entrant within a thread: a transaction opened while the thread holds the lock
        (the canary controller's read-decide-save around a deployment's action) joins it.
        """
        directory = self.directory(name)
        path = directory / LOCK_FILE
        with reentrant(str(path), lambda: self._file_lock(name, path, timeout)):
            yield

    @contextlib.contextmanager
    def _file_lock(self, name: str, path: Path, timeout: float | None) -> Iterator[None]:
        lock = FileLock(str(path))
        wait = self.lock_timeout if timeout is None else timeout
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=wait)
        except LockTimeout:
            raise StateError(
                f"deployment {name!r} is locked by another process (waited {wait:.0f}s)"
            ) from None
        except OSError as exc:  # mkdir, or the lock file (LockTimeout is one too)
            raise StateError(cannot_write(f"the lock of deployment {name!r}", path.parent,
                                          exc)) from exc
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def held(self, name: str) -> Iterator[None]:
        """Let :meth:`lock` join the deployment's lock, which the caller already holds by
        ``flock`` on its own descriptor (the brake, :mod:`workbench.cli.brake`)."""
        with reentrant(str(self.directory(name) / LOCK_FILE), contextlib.nullcontext):
            yield

    @contextlib.contextmanager
    def transaction(self, name: str, timeout: float | None = None) -> Iterator[Transaction]:
        """Lock, read (None if it does not exist yet), let the caller save, unlock."""
        with self.lock(name, timeout):
            state = self.load(name) if self.exists(name) else None
            yield Transaction(self, name, state)

    def remove(self, name: str) -> None:
        """Delete the deployment's directory (state, logs, router workdir)."""
        with self.lock(name):
            self.path(name).unlink(missing_ok=True)
        shutil.rmtree(self.directory(name), ignore_errors=True)

    def _write(self, state: DeploymentState, *, keep_previous: bool = True) -> None:
        path = self.path(state.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if keep_previous:
                with contextlib.suppress(OSError, ValueError):
                    current = path.read_bytes()
                    json.loads(current)  # only a readable state is worth keeping
                    write_atomic(path.parent / PREVIOUS_FILE, current)
            data = json.dumps(state.to_dict(), indent=2, sort_keys=False) + "\n"
            write_atomic(path, data)
        except OSError as exc:  # a full disk, a read-only home: the old state stays whole
            raise StateError(cannot_write(f"the state of deployment {state.name!r}", path.parent,
                                          exc)) from exc
