"""``workbench deploy export``: a deployment as a kustomize directory, for GitOps (Argo CD, Flux).

Three formats over the same :class:`ExportSource` (model, versions per colour, weights):

- ``k8s``: plain Kubernetes (:func:`~workbench.deploy.platforms.kubernetes.manifests.deployment_objects`):
  the colour Deployments, Services, HPAs, PDBs, the stable Service and the route, and
  the least-privilege ServiceAccount, Role and RoleBinding the workbench runs the
  deployment with (:mod:`~workbench.deploy.platforms.kubernetes.rbac`);
- ``argo-rollouts``: a ``Rollout`` with canary steps and an ``AnalysisTemplate``
  (:mod:`~workbench.deploy.platforms.kubernetes.argo`) serving the desired version (the candidate's,
  if there is one);
- ``kserve``: an ``InferenceService`` (:mod:`~workbench.deploy.platforms.kubernetes.kserve`), the
  candidate with ``canaryTrafficPercent``.

The HPA, PDB and HTTPRoute are written in the API versions of an
:class:`~workbench.deploy.platforms.kubernetes.capabilities.ApiVersions` (the newest by
default; a Kubernetes release's, ``--kube-version 1.20``, or a live cluster's discovery).

The directory gets one YAML file per object, ``kustomization.yaml`` listing them in
apply order, and ``.workbench-export.json`` naming what it wrote. Everything is rendered
before anything is written. A non-empty directory without that marker is refused
(nothing is touched); a previous export is replaced, and only the files it wrote are
removed, so files a user added beside them stay.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench._fs import write_atomic
from workbench.deploy.names import COLORS, check_color
from workbench.deploy.platforms.kubernetes import argo, kserve
from workbench.deploy.platforms.kubernetes.capabilities import ApiVersions
from workbench.deploy.platforms.kubernetes.rbac import rbac_objects
from workbench.deploy.platforms.kubernetes.routes import check_weights, deployment_objects
from workbench.errors import DeployError, DeployValueError
from workbench.model.version import Version, check_model_name

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench._types import Color, StrPath
    from workbench.deploy.platforms.kubernetes.manifests import Manifest
    from workbench.deploy.platforms.kubernetes.options import KubernetesOptions
    from workbench.deploy.state import DeploymentState

__all__ = ["FORMATS", "MARKER", "ExportSource", "export", "render", "write"]

FORMATS = ("k8s", "argo-rollouts", "kserve")
MARKER = ".workbench-export.json"
KUSTOMIZATION = "kustomization.yaml"


@dataclass(frozen=True)
class ExportSource:
    """What is exported: a deployment's model, the version of each colour, the weights."""

    name: str
    model: str
    versions: Mapping[str, str]
    weights: Mapping[str, int] = field(default_factory=dict)  # empty: all to stable
    stable: Color = "blue"

    def __post_init__(self) -> None:
        check_color(self.stable)
        if self.stable not in self.versions:
            raise DeployValueError(f"the stable colour {self.stable} has no version")
        if self.weights:
            check_weights(self.weights)

    @property
    def candidate(self) -> Color | None:
        other = next(c for c in COLORS if c != self.stable)
        return other if other in self.versions else None

    @property
    def shares(self) -> dict[str, int]:
        return check_weights(self.weights) if self.weights else {self.stable: 100}

    @classmethod
    def from_state(cls, state: DeploymentState) -> ExportSource:
        """The running colours of a local deployment, their versions and weights."""
        versions: dict[str, str] = {color: record.version for color, record in state.instances.items()}
        stable = state.rollout.stable
        if stable not in versions:
            raise DeployValueError(
                f"deployment {state.name} runs no stable instance (phase {state.phase}); "
                "export it with --model and --version instead"
            )
        weights: dict[str, int] = {c: w for c, w in state.weights.items() if c in versions}
        if sum(weights.values()) != 100:
            weights = {stable: 100}
        return cls(state.name, state.model, versions, weights, stable)

    @classmethod
    def from_versions(cls, name: str, model: str, version: str, candidate: str | None = None,
                      weight: int = 0) -> ExportSource:
        """Not a local deployment: ``version`` on blue (stable), ``candidate`` on green at ``weight`` %.

        The model and versions need not be in the local repository (the cluster's may
        differ), but they must be names a repository could hold.
        """
        try:
            check_model_name(model)
            for text in (version, candidate):
                if text is not None:
                    Version.parse(text)
        except ValueError as exc:
            raise DeployValueError(str(exc)) from exc
        if candidate is None:
            if weight:
                raise DeployValueError("a weight needs a candidate version")
            return cls(name, model, {"blue": version})
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise DeployValueError(f"weight must be an integer in 0..100, not {weight!r}")
        weights = {"blue": 100 - weight, "green": weight}
        return cls(name, model, {"blue": version, "green": candidate}, weights)


def render(source: ExportSource, opts: KubernetesOptions, fmt: str,
           versions: ApiVersions | None = None) -> list[Manifest]:
    """The objects of ``source`` in format ``fmt``, in apply order, in ``versions``
    (default: the newest API versions)."""
    versions = versions or ApiVersions()
    return [versions.fit(obj) for obj in _render(source, opts, fmt)]


def _render(source: ExportSource, opts: KubernetesOptions, fmt: str) -> list[Manifest]:
    candidate = source.candidate
    desired = source.versions[candidate or source.stable]
    if fmt == "k8s":
        return [*rbac_objects(source.name, opts.target_namespace),
                *deployment_objects(opts, source.name, source.model, source.versions, source.shares,
                                    stable=source.stable)]
    if fmt == "argo-rollouts":
        return argo.rollout_objects(opts, source.name, source.model, desired)
    if fmt == "kserve":
        percent = source.shares.get(candidate, 0) if candidate else None
        return [kserve.inference_service(opts, source.name, source.model, desired, canary_percent=percent)]
    raise DeployValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def file_name(obj: Manifest) -> str:
    """``<kind>-<name>.yaml``, e.g. ``deployment-web-blue.yaml``."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def _dump(obj: Any) -> str:
    import yaml

    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100))


def documents(objects: list[Manifest], source: ExportSource, fmt: str) -> dict[str, str]:
    """File name -> YAML text: one file per object and the kustomization (pure)."""
    files: dict[str, str] = {}
    for obj in objects:
        name = file_name(obj)
        if name in files:
            raise DeployValueError(f"two objects would both be written to {name}")
        files[name] = _dump(obj)
    header = (f"# workbench deploy export {source.name} --format {fmt}: model {source.model}, "
              + ", ".join(f"{c} {v}" for c, v in sorted(source.versions.items())) + "\n")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    files[KUSTOMIZATION] = header + _dump(kustomization)
    return files


def _previous(out: Path) -> list[str]:
    """The files a previous export wrote to ``out`` (refuses a directory that is not one)."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise DeployValueError(f"{out} exists and is not a directory")
    marker = out / MARKER
    if not marker.is_file():
        if any(out.iterdir()):
            raise DeployValueError(
                f"{out} is not empty and holds no previous export; choose an empty or new directory"
            )
        return []
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeployValueError(
            f"{marker} is unreadable ({exc}); remove it or choose another directory"
        ) from exc
    return [f for f in files if isinstance(f, str) and "/" not in f and f not in ("", ".", "..")]


def write(out: StrPath, files: Mapping[str, str], *, meta: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``files`` into ``out`` as an export (replacing a previous export's files only)."""
    out = Path(out)
    previous = _previous(out)
    made = next((d for d in reversed((out, *out.parents)) if not d.exists()), None)
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            write_atomic(out / name, text, mode=0o644)
            written.append(out / name)
        for stale in set(previous) - set(files):
            (out / stale).unlink(missing_ok=True)
        record = {"files": list(files), **(meta or {})}
        write_atomic(out / MARKER, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o644)
    except OSError as exc:
        if made is not None:  # the directories this export made go again
            shutil.rmtree(made, ignore_errors=True)
        raise DeployError(f"cannot write the export to {out}: {exc.strerror or exc}") from exc
    return written


def export(source: ExportSource, opts: KubernetesOptions, fmt: str, out: StrPath,
           versions: ApiVersions | None = None) -> list[Path]:
    """Render ``source`` as ``fmt`` (in ``versions``) and write it into ``out``; returns
    the files written."""
    files = documents(render(source, opts, fmt, versions), source, fmt)
    _previous(Path(out))  # refuse before writing anything
    return write(out, files, meta={"format": fmt, "deployment": source.name, "model": source.model,
                                   "versions": dict(source.versions)})
