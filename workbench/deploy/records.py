"""What a deployment records of each instance it started, and each colour's set of them.

An :class:`InstanceRecord` is one serving instance as a backend last started it: where it
listens, the backend's reference to it (a pid, a container id), and the ``workbench
serve`` options it was started with beyond the deployment's own, so that ``deploy
restore`` starts a lost instance as it was (:meth:`InstanceRecord.restart_spec`). An
:class:`InstanceSet` is a colour's instances (one per engine and replica).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from workbench.deploy.backend import Instance, InstanceSpec, check_instance_address
from workbench.deploy.rollout.phases import CANDIDATE_PHASES, Rollout
from workbench.errors import StateError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from workbench._types import Color

__all__ = ["Deployed", "InstanceRecord", "InstanceSet", "record_color"]


class Deployed(Protocol):
    """What a record needs of its deployment's state (a DeploymentState)."""

    @property
    def rollout(self) -> Rollout: ...

    def instance_spec(self, color: Color, version: str, port: int, *, host: str = ...,
                      admin_token: str | None = ..., engine: str = ...,
                      replica: int = ...) -> InstanceSpec: ...


def record_color(value: object) -> Color:
    if value == "blue":
        return "blue"
    if value == "green":
        return "green"
    raise StateError(f"invalid colour {value!r} in deployment state")


@dataclass(frozen=True)
class InstanceRecord:
    """One colour's serving instance as last started by a backend."""

    color: Color
    version: str
    host: str
    port: int
    backend: str
    ref: str  # pid (process) or container id (docker)
    started_at: float
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)
    engine: str = ""  # the Docker engine it runs on ("" = the deployment's default)
    replica: int = 0  # which of the colour's instances on that engine
    #: ``workbench serve`` options it was started with beyond the deployment's
    #: (``--segment-by``, ``--max-segments``): any colour may count per segment.
    args: tuple[str, ...] = field(default=(), compare=False)
    #: Chaos-testing options it was started with (``--fault-error-rate`` ...): a
    #: candidate's only, restarted on the candidate only (:meth:`restart_spec`).
    faults: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        check_instance_address(self.color, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_instance(
        cls, instance: Instance, *, started_at: float | None = None
    ) -> InstanceRecord:
        return cls(
            color=instance.spec.color,
            version=instance.spec.version,
            host=instance.spec.host,
            port=instance.spec.port,
            backend=instance.backend,
            ref=instance.ref,
            started_at=time.time() if started_at is None else started_at,
            labels=dict(instance.labels),
            engine=instance.spec.engine,
            replica=instance.spec.replica,
            args=instance.spec.extra_args,
            faults=instance.spec.faults,
        )

    @property
    def where(self) -> str:
        """The engine and replica, for messages: ``ssh://gpu1 #1`` (empty for the default)."""
        place = self.engine + (f" #{self.replica}" if self.replica else "")
        return place.strip()

    def to_instance(self, state: Deployed) -> Instance:
        spec = state.instance_spec(self.color, self.version, self.port, host=self.host,
                                   engine=self.engine, replica=self.replica)
        spec = replace(spec, extra_args=self.args, faults=self.faults)
        return Instance(spec=spec, backend=self.backend, ref=self.ref, labels=dict(self.labels))

    def restart_spec(self, state: Deployed, admin_token: str | None = None) -> InstanceSpec:
        """What starts this instance again as it was (``deploy restore``): its options,
        and its faults only while it is the rollout's candidate — stable never has any."""
        spec = self.to_instance(state).spec
        rollout = state.rollout
        candidate = self.color == rollout.candidate and rollout.phase in CANDIDATE_PHASES
        return replace(spec, admin_token=admin_token, faults=spec.faults if candidate else ())

    def to_dict(self) -> dict[str, Any]:
        return {
            "color": self.color,
            "version": self.version,
            "host": self.host,
            "port": self.port,
            "backend": self.backend,
            "ref": self.ref,
            "started_at": self.started_at,
            "labels": dict(self.labels),
            "engine": self.engine,
            "replica": self.replica,
            "args": list(self.args),
            "faults": list(self.faults),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceRecord:
        return cls(
            color=record_color(data["color"]),
            version=str(data["version"]),
            host=str(data["host"]),
            port=int(data["port"]),
            backend=str(data["backend"]),
            ref=str(data["ref"]),
            started_at=float(data.get("started_at", 0.0)),
            labels={str(k): str(v) for k, v in dict(data.get("labels", {})).items()},
            engine=str(data.get("engine", "")),
            replica=int(data.get("replica", 0)),
            args=tuple(str(a) for a in data.get("args", ())),
            faults=tuple(str(a) for a in data.get("faults", ())),
        )


@dataclass(frozen=True)
class InstanceSet:
    """All instances of one colour (one per engine and replica), all serving one version.

    ``version``, ``url`` and ``color`` read as those of a single instance did, so code
    that needs one instance of the colour (a replay, a sample) takes the first.
    """

    color: Color
    records: tuple[InstanceRecord, ...]

    def __post_init__(self) -> None:
        if not self.records:
            raise ValueError(f"{self.color} has no instances")
        for record in self.records:
            if record.color != self.color:
                raise ValueError(f"instance recorded under {self.color} is {record.color}")
        if len({r.version for r in self.records}) > 1:
            raise ValueError(f"the {self.color} instances serve different versions")
        if len({(r.engine, r.replica) for r in self.records}) != len(self.records):
            raise ValueError(f"two {self.color} instances share an engine and replica")

    @classmethod
    def of(cls, records: InstanceSet | InstanceRecord | Iterable[InstanceRecord]) -> InstanceSet:
        if isinstance(records, InstanceSet):
            return records
        if isinstance(records, InstanceRecord):
            return cls(records.color, (records,))
        items = tuple(records)
        return cls(items[0].color if items else "blue", items)

    def __iter__(self) -> Iterator[InstanceRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def version(self) -> str:
        return self.records[0].version

    # The first instance's address and reference: what a colour was before it could span
    # engines, so single-instance code reads on unchanged.
    @property
    def url(self) -> str:
        return self.records[0].url

    @property
    def host(self) -> str:
        return self.records[0].host

    @property
    def port(self) -> int:
        return self.records[0].port

    @property
    def ref(self) -> str:
        return self.records[0].ref

    @property
    def backend(self) -> str:
        return self.records[0].backend

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.records]
