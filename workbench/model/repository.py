"""The model repository on disk: ``<root>/<model>/<version>/`` plus aliases.

Readers see only complete versions: a version directory counts when its name is
a semantic version, it is not hidden, and its manifest exists. Publishing stages
into a hidden directory, writes the manifest last, fsyncs and renames, so a
half-copied version is never listed or loaded. Aliases live in
``<root>/<model>/aliases.json``, replaced atomically under a file lock.

Publishing runs the model (to describe its outputs, prove it loads with the
version's runtime settings, or tune them with ``runtime="auto"``) only through the
:class:`~workbench.model.probe.ModelProbe` the caller passes in; this layer never
imports the runtime. A PaddleX export directory is published as is: its
``inference.yml`` gives the signature, the sample, the task and the codec (see
:mod:`workbench.model.paddlex`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from filelock import FileLock

from workbench._fs import cannot_write
from workbench.errors import (
    AliasError,
    IntegrityError,
    ModelNotFoundError,
    PublishError,
    RepositoryError,
    SignatureError,
    VersionNotFoundError,
)
from workbench.model import publishing, signing, tuning
from workbench.model.manifest import (
    MANIFEST_NAME,
    MODEL_KIND,
    PIPELINE_KIND,
    Manifest,
    read_kind,
    sha256_file,
)
from workbench.model.pipeline import PipelineManifest, pin
from workbench.model.publishing import AUTO
from workbench.model.version import ModelRef, Version, check_alias, check_model_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    import numpy as np

    from workbench._types import StrPath, TensorsIn
    from workbench.model.manifest import TensorSpec
    from workbench.model.probe import ModelProbe
    from workbench.model.runtime_settings import RuntimeSettings, RuntimeTrial

log = logging.getLogger(__name__)
_M = TypeVar("_M")
ALIASES_NAME = "aliases.json"
LATEST = "latest"
__all__ = ["AUTO", "LATEST", "ModelRepository"]


class ModelRepository:
    """A directory of models, each with semantic-versioned, manifest-sealed versions."""

    # The probe publishing uses when neither the call nor the repository names one; set
    # by the runtime's composition point (workbench.runtime.repository), never here.
    default_probe: ClassVar[ModelProbe | None] = None

    def __init__(
        self, root: StrPath, *, verify_key: StrPath | None = None, probe: ModelProbe | None = None
    ) -> None:
        self.root = Path(root).expanduser()
        self.verify_key = Path(verify_key) if verify_key is not None else None
        # How publishing runs a model when a call names no probe (see workbench.model.probe).
        self.probe = probe

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    # -- reading ---------------------------------------------------------------------

    def models(self) -> list[str]:
        """Models that have at least one complete version."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and not entry.name.startswith(".") and self._version_dirs(entry)
        )

    def versions(self, model: str) -> list[Version]:
        """Complete versions of ``model``, oldest first."""
        model_dir = self._model_dir(model)
        return sorted(self._version_dirs(model_dir))

    def _version_dirs(self, model_dir: Path) -> dict[Version, Path]:
        found: dict[Version, Path] = {}
        try:
            entries = list(model_dir.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return found
        for entry in entries:
            if entry.name.startswith(".") or not Version.is_version(entry.name):
                continue
            if (entry / MANIFEST_NAME).is_file():
                found[Version.parse(entry.name)] = entry
        return found

    def _model_dir(self, model: str) -> Path:
        try:
            check_model_name(model)
        except ValueError as exc:
            raise ModelNotFoundError(str(exc)) from exc
        model_dir = self.root / model
        if not model_dir.is_dir():
            known = ", ".join(self.models()) or "none"
            raise ModelNotFoundError(f"no model {model!r} in {self.root} (models: {known})")
        return model_dir

    def path(self, model: str, version: Version | str) -> Path:
        """Directory of a complete version; raise VersionNotFoundError otherwise."""
        version = self.resolve(model, version)
        return self._model_dir(model) / str(version)

    def manifest(self, model: str, version: Version | str) -> Manifest:
        """A version's manifest, checked to name this model and version (see Manifest.bind)."""
        path = self.path(model, version)
        return Manifest.read(path).bind(path)

    def sample(self, model: str, version: Version | str) -> dict[str, np.ndarray[Any, Any]]:
        """The sample input batch recorded with a version."""
        path = self.path(model, version)
        return Manifest.read(path).bind(path).load_sample(path)

    def fingerprint(self, model: str) -> tuple[object, ...]:
        """A cheap value that changes when versions or aliases of ``model`` change."""
        model_dir = self.root / model
        try:
            names = sorted(e.name for e in model_dir.iterdir() if not e.name.startswith("."))
        except FileNotFoundError:
            return ()
        marks = []
        for name in names:
            path = model_dir / name
            stamp = path / MANIFEST_NAME if path.is_dir() else path
            try:
                marks.append((name, stamp.stat().st_mtime_ns))
            except FileNotFoundError:
                marks.append((name, 0))
        return tuple(marks)

    def version_fingerprint(self, model: str, version: Version | str) -> tuple[object, ...]:
        """A cheap value that changes when any file of a version changes.

        Relative name, size and mtime of every file under the version directory (the
        manifest and signature included), so a version refused as unsigned or half
        copied is noticed once it is signed or its copy completes. Empty when the
        directory is gone.
        """
        path = self.root / model / str(version)
        marks: list[object] = []
        for child in sorted(path.rglob("*")):
            try:
                stat = child.stat()
            except FileNotFoundError:
                continue
            if not child.is_dir():
                marks.append((child.relative_to(path).as_posix(), stat.st_size, stat.st_mtime_ns))
        return tuple(marks)

    # -- aliases ---------------------------------------------------------------------

    def aliases(self, model: str) -> dict[str, Version]:
        """Alias → version, including the implicit ``latest`` (highest release)."""
        model_dir = self._model_dir(model)
        versions = self._version_dirs(model_dir)
        result: dict[str, Version] = {}
        if versions:
            releases = [v for v in versions if not v.prerelease]
            result[LATEST] = max(releases or versions)
        for alias, text in self._read_aliases(model_dir).items():
            try:
                version = Version.parse(text)
            except ValueError:
                log.warning("ignoring alias %s of %s: %r is not a version", alias, model, text)
                continue
            if version in versions:
                result[alias] = version
            else:
                log.warning("alias %s of %s points at missing version %s", alias, model, version)
        return dict(sorted(result.items()))

    def _read_aliases(self, model_dir: Path) -> dict[str, str]:
        path = model_dir / ALIASES_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise RepositoryError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise RepositoryError(f"{path} must hold a JSON object of alias → version")
        return {str(k): str(v) for k, v in data.items()}

    def set_alias(self, model: str, alias: str, version: Version | str) -> Version:
        """Point ``alias`` at an existing version of ``model``."""
        try:
            check_alias(alias)
        except ValueError as exc:
            raise AliasError(str(exc)) from exc
        model_dir = self._model_dir(model)
        try:
            target = Version.parse(version)
        except ValueError:
            target = self.resolve(model, version)
        if target not in self._version_dirs(model_dir):
            raise AliasError(
                f"cannot point {model}@{alias} at {target}: no such version "
                f"(versions: {', '.join(map(str, self.versions(model))) or 'none'})"
            )
        self._update_aliases(model_dir, {alias: str(target)})
        log.info("alias %s@%s -> %s", model, alias, target)
        return target

    def remove_alias(self, model: str, alias: str) -> None:
        model_dir = self._model_dir(model)
        if alias not in self._read_aliases(model_dir):
            raise AliasError(f"{model} has no alias {alias!r}")
        self._update_aliases(model_dir, {alias: None})

    def _update_aliases(self, model_dir: Path, changes: Mapping[str, str | None]) -> None:
        with FileLock(str(model_dir / ".aliases.lock"), timeout=30):
            current = self._read_aliases(model_dir)
            for alias, target in changes.items():
                if target is None:
                    current.pop(alias, None)
                else:
                    current[alias] = target
            text = json.dumps(current, indent=2, sort_keys=True) + "\n"
            publishing.write_manifest(model_dir / ALIASES_NAME, text)

    # -- resolving -------------------------------------------------------------------

    def resolve(self, model: str, ref: Version | str | None = None) -> Version:
        """Turn a version string, alias or ``None`` (latest) into an existing version."""
        versions = self._version_dirs(self._model_dir(model))
        if isinstance(ref, Version):
            if ref in versions:
                return ref
            raise VersionNotFoundError(self._missing(model, str(ref), versions))
        ref = (ref or LATEST).strip()
        if Version.is_version(ref):
            version = Version.parse(ref)
            if version in versions:
                return version
            raise VersionNotFoundError(self._missing(model, ref, versions))
        aliases = self.aliases(model)
        if ref in aliases:
            return aliases[ref]
        raise VersionNotFoundError(self._missing(model, ref, versions, aliases))

    def _missing(
        self,
        model: str,
        ref: str,
        versions: Iterable[Version],
        aliases: Mapping[str, Version] | None = None,
    ) -> str:
        known = ", ".join(str(v) for v in sorted(versions)) or "none"
        message = f"{model} has no version or alias {ref!r} (versions: {known}"
        if aliases:
            message += "; aliases: " + ", ".join(f"{a}→{v}" for a, v in aliases.items())
        return message + ")"

    def parse_ref(self, text: str, default_model: str | None = None) -> tuple[str, Version]:
        """Resolve ``model@alias``, ``model:version``, ``model`` or a bare ref of ``default_model``."""
        try:
            ref = ModelRef.parse(text, default_model)
        except ValueError as exc:
            raise VersionNotFoundError(str(exc)) from exc
        return ref.model, self.resolve(ref.model, ref.ref)

    # -- writing ---------------------------------------------------------------------

    def publish(
        self,
        model: str,
        version: Version | str,
        source: StrPath,
        *,
        sample: TensorsIn | None = None,
        inputs: Iterable[TensorSpec] | None = None,
        outputs: Iterable[TensorSpec] | None = None,
        metrics: Mapping[str, float] | None = None,
        notes: str = "",
        aliases: Iterable[str] = (),
        signing_key: StrPath | None = None,
        probe: ModelProbe | None = None,
        runtime: RuntimeSettings | str | None = None,
        config: StrPath | None = None,
        progress: Callable[[int, int, RuntimeTrial | None], None] | None = None,
        tuning_runs: int = tuning.RUNS,
    ) -> Manifest:
        """Publish the model files in ``source`` as ``model:version``, atomically.

        The input signature is taken from ``inputs`` when given, otherwise from
        ``sample`` (its dtypes and shapes, batch dimension dynamic), otherwise from the
        export's ``inference.yml`` (or ``config``, a PaddleX-style file copied in as
        ``inference.yml``), which also yields a generated sample, the task and the
        codec. Outputs are taken from ``outputs`` or from running the sample through
        ``probe`` once with the version's ``runtime`` settings, which also proves they
        load. ``runtime="auto"`` tries a few settings through ``probe`` and records the
        fastest correct one by the median of ``tuning_runs`` timed runs
        (``progress(done, total, trial)`` reports each try).
        """
        try:
            check_model_name(model)
            version = Version.parse(version)
            alias_list = [check_alias(a) for a in aliases]
        except ValueError as exc:
            raise PublishError(str(exc)) from exc
        source = Path(source)
        if not source.is_dir():
            raise PublishError(f"source {source} is not a directory")
        probe = probe or self.probe or self.default_probe
        probing = publishing.Probing(probe, runtime, config, progress, tuning_runs)
        manifest = self._publish_staged(
            model, version, signing_key,
            lambda staging: publishing.stage(
                staging, model, version, source, sample, inputs, outputs, metrics, notes, probing
            ),
        )
        if alias_list:
            self._update_aliases(self.root / model, {a: str(version) for a in alias_list})
        log.info("published %s:%s (%d files)", model, version, len(manifest.files))
        return manifest

    def _publish_staged(
        self, model: str, version: Version, signing_key: StrPath | None, fill: Callable[[Path], _M]
    ) -> _M:
        """Stage a version with ``fill`` (which writes its files and manifest), sign it,
        fsync it and rename it into place; nothing is left behind when anything fails."""
        model_dir = self.root / model
        target = model_dir / str(version)
        if target.exists():
            raise PublishError(f"{model}:{version} already exists in {self.root}; versions are immutable")
        what = f"{model}:{version}"
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=model_dir))
        except OSError as exc:
            raise PublishError(cannot_write(what, model_dir, exc)) from exc
        try:
            manifest = fill(staging)
            if signing_key is not None:
                signing.sign_directory(staging, Path(signing_key))
            _make_readable(staging)
            _fsync_tree(staging)
            try:
                staging.rename(target)
            except OSError as exc:
                raise PublishError(f"{model}:{version} was published concurrently: {exc}") from exc
            _fsync_dir(model_dir)
        except OSError as exc:  # a full disk, a directory turned read-only: nothing is left
            raise PublishError(cannot_write(what, model_dir, exc)) from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def publish_settings(
        self,
        model: str,
        version: Version | str,
        base: Version | str,
        runtime: RuntimeSettings | str,
        *,
        probe: ModelProbe | None = None,
        notes: str | None = None,
        aliases: Iterable[str] = (),
        signing_key: StrPath | None = None,
        progress: Callable[[int, int, RuntimeTrial | None], None] | None = None,
        tuning_runs: int = tuning.RUNS,
    ) -> Manifest:
        """Publish ``model:version`` as ``model:base``'s files with other runtime settings.

        The base is verified first (sha256s, and its signature when a key is configured);
        the new version then goes through publishing like any other: its files are copied
        and hashed, the settings proved (or tuned, with ``"auto"``) through ``probe``, and
        it is signed with ``signing_key``.
        """
        base_dir = self.path(model, base)
        recorded = self.verify(model, base)
        probe = probe or self.probe or self.default_probe
        return self.publish(
            model, version, base_dir,
            sample=recorded.load_sample(base_dir) or None,
            inputs=recorded.inputs,
            outputs=recorded.outputs if probe is None else None,
            metrics=recorded.metrics,
            notes=recorded.notes if notes is None else notes,
            aliases=aliases,
            signing_key=signing_key,
            probe=probe,
            runtime=runtime,
            progress=progress,
            tuning_runs=tuning_runs,
        )

    def verify(self, model: str, version: Version | str, *, public_key: StrPath | None = None) -> Manifest:
        """Check sha256s (always) and the signature (when a key is given or configured).

        Raises IntegrityError or SignatureError naming the file that changed.
        With a key, the signed manifest must also name this model and version: a
        signature binds a version to its place, so a signed version copied or renamed
        elsewhere is refused (IntegrityError naming both), and a signed manifest from
        before the identity was recorded is refused until it is signed again.
        """
        path = self.path(model, version)
        manifest = Manifest.read(path)
        key = Path(public_key) if public_key is not None else self.verify_key
        label = f"{model}:{path.name}"
        if key is not None:
            signing.verify_directory(path, key, label=label)
            if not manifest.names_identity:
                raise SignatureError(
                    f"{label}: its signed manifest does not name its model and version, so "
                    f"the signature does not bind it to {label}; sign it again with "
                    f"`workbench models sign {label}`",
                    path=MANIFEST_NAME,
                )
        manifest = manifest.bind(path)
        manifest.verify_files(path)
        return manifest

    # -- pipelines (see workbench.model.pipeline) ------------------------------------

    def kind(self, model: str, version: Version | str) -> str:
        """``model`` or ``pipeline``: what a version is."""
        return read_kind(self.path(model, version))

    def publish_pipeline(
        self,
        name: str,
        version: Version | str,
        stages: Mapping[str, str],
        *,
        notes: str = "",
        aliases: Iterable[str] = (),
        signing_key: StrPath | None = None,
    ) -> PipelineManifest:
        """Publish ``name:version`` naming the stage versions ``{role: "model:version"}``
        (aliases resolved now; each stage verified and pinned by its manifest's sha256)."""
        try:
            check_model_name(name)
            version = Version.parse(version)
            alias_list = [check_alias(a) for a in aliases]
        except ValueError as exc:
            raise PublishError(str(exc)) from exc
        pinned = []
        for role, ref in stages.items():
            model, stage_version = self.parse_ref(ref)
            if model == name:
                raise PublishError(f"pipeline {name} cannot name itself as its {role} stage")
            if self.kind(model, stage_version) != MODEL_KIND:
                raise PublishError(f"the {role} stage {model}:{stage_version} is a pipeline, not a model")
            recorded = self.verify(model, stage_version)
            stage_dir = self.path(model, stage_version)
            pinned.append(pin(role, model, stage_version, stage_dir, recorded.task.value))
        try:
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            manifest = PipelineManifest(name, str(version), tuple(pinned), created, notes)
        except ValueError as exc:
            raise PublishError(f"{name}:{version}: {exc}") from exc

        def fill(staging: Path) -> PipelineManifest:
            publishing.write_manifest(staging / MANIFEST_NAME, manifest.to_json())
            return manifest

        self._publish_staged(name, version, signing_key, fill)
        if alias_list:
            self._update_aliases(self.root / name, {a: str(version) for a in alias_list})
        log.info("published pipeline %s:%s (%s)", name, version, ", ".join(s.ref for s in manifest.stages))
        return manifest

    def pipeline(self, name: str, version: Version | str) -> PipelineManifest:
        """A pipeline version's manifest, checked to name this pipeline and version."""
        return PipelineManifest.read(self.path(name, version))

    def verify_pipeline(
        self, name: str, version: Version | str, *, public_key: StrPath | None = None
    ) -> PipelineManifest:
        """Check the pipeline's signature (with a key), then every stage and its pinned manifest.

        Raises SignatureError, IntegrityError naming the stage that changed, or
        VersionNotFoundError when a stage version is gone.
        """
        path = self.path(name, version)
        key = Path(public_key) if public_key is not None else self.verify_key
        if key is not None:
            signing.verify_directory(path, key, label=f"{name}:{path.name}")
        manifest = PipelineManifest.read(path)
        manifest.verify_files(path)
        for stage in manifest.stages:
            try:
                stage_dir = self.path(stage.model, stage.version)
            except LookupError as exc:
                raise IntegrityError(
                    f"{name}:{path.name}: its {stage.role} stage {stage.ref} is gone ({exc})"
                ) from exc
            self.verify(stage.model, stage.version, public_key=public_key)
            if sha256_file(stage_dir / MANIFEST_NAME) != stage.manifest_sha256:
                raise IntegrityError(
                    f"{name}:{path.name}: the manifest of its {stage.role} stage {stage.ref} has changed "
                    f"since the pipeline was published",
                    path=f"{stage.model}/{stage.version}/{MANIFEST_NAME}",
                )
        return manifest

    def sign(self, model: str, version: Version | str, private_key: StrPath) -> Path:
        """Sign a published version in place (after checking its sha256s).

        A manifest that does not name its model and version yet gets them first, so
        the signature binds the version to this place.
        """
        path = self.path(model, version)
        if read_kind(path) == PIPELINE_KIND:
            self.verify_pipeline(model, version)
            return signing.sign_directory(path, Path(private_key))
        recorded = Manifest.read(path)
        manifest = recorded.bind(path)
        manifest.verify_files(path)
        if not recorded.names_identity:
            publishing.write_manifest(path / MANIFEST_NAME, manifest.to_json())
        return signing.sign_directory(path, Path(private_key))

    def delete(self, model: str, version: Version | str) -> None:
        """Remove a version (aliases pointing at it are dropped); the rename makes it vanish at once."""
        path = self.path(model, version)
        model_dir = path.parent
        trash = model_dir / f".deleted-{path.name}"
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        stale = {a: None for a, v in self._read_aliases(model_dir).items() if v == path.name}
        if stale:
            self._update_aliases(model_dir, stale)


def _make_readable(root: Path) -> None:
    """Give staged files the modes a plain copy would have (temp files start private).

    Serving containers run as another user and mount the repository read-only.
    """
    mask = publishing.umask()
    root.chmod(0o755 & ~mask)
    for path in root.rglob("*"):
        path.chmod((0o755 if path.is_dir() else 0o644) & ~mask)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for path in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        _fsync_dir(path)
