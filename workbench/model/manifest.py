"""The manifest (``workbench.json``) of one published version.

It is written last when a version is published, so its presence marks a complete
version. It records every file's sha256 and size, the input/output signature, the
name of the sample-input file used for warm-up and deep health checks, metrics
such as accuracy, the creation time and free-form notes.

For what the outputs mean and how the version runs it records ``task`` (a
:class:`~workbench.model.task.Task` value), ``codec`` (a PaddleX export's
``{"preprocess": PreProcess.transform_ops, "postprocess": PostProcess}`` copied
verbatim from its ``inference.yml``, character dictionary included; ``null``
without one), ``runtime`` (the Paddle Inference settings, see
:mod:`workbench.model.runtime_settings`), ``runtime_trials`` (what ``--runtime
auto`` measured) and ``config`` (the copied config file's name). Manifests written
before these fields load as generic, codec-less versions with Paddle's defaults.

It also names its model and version. The signature covers the manifest, so this
binds a signed version to its place: a copy of ``digits/1.2.0`` at
``digits/1.9.0``, or of ``resnet/1.0.0`` at ``digits/2.0.0``, is refused when
read through :meth:`Manifest.bind`. Manifests written before the identity was
recorded take the identity of the directory they sit in; such a manifest cannot
pass verification with a key (see ``ModelRepository.verify``), and signing it
adds the identity first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import IntegrityError, ManifestError, MisplacedVersionError
from workbench.model.runtime_settings import RuntimeSettings, RuntimeTrial
from workbench.model.task import Task
from workbench.model.version import Version

if TYPE_CHECKING:
    from workbench._types import TensorsIn

MANIFEST_NAME = "workbench.json"
SAMPLE_NAME = "sample.npz"
SIGNATURE_NAME = "model.sig"
FORMAT_VERSION = 1
# Files that are not part of a version's content: the manifest itself and the
# detached signature (which covers the manifest).
UNHASHED = frozenset({MANIFEST_NAME, SIGNATURE_NAME})

_DTYPES = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool", "bfloat16"}
)


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one input or output; ``-1`` marks a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("tensor name must not be empty")
        if self.dtype not in _DTYPES:
            raise ValueError(f"tensor {self.name!r}: unsupported dtype {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < -1 or d == 0 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: dimensions must be positive or -1, got {self.shape}")

    @classmethod
    def from_array(cls, name: str, array: np.ndarray[Any, Any], *, dynamic_batch: bool = True) -> TensorSpec:
        shape = tuple(array.shape)
        if dynamic_batch and shape:
            shape = (-1, *shape[1:])
        return cls(name, str(array.dtype), shape)

    def __str__(self) -> str:
        dims = ",".join("?" if d == -1 else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: path relative to the version directory, sha256, size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a published version contains and how to call it."""

    model: str
    version: str
    format: str  # "pir" | "pdmodel" | "legacy"
    files: tuple[FileEntry, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    created: str
    sample: str | None = SAMPLE_NAME
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    framework: str = ""
    # What the outputs mean (decides decoding and comparison); "generic" for plain tensors.
    task: Task = Task.GENERIC
    # A PaddleX export's pre/post-processing, verbatim from its inference.yml:
    # {"preprocess": PreProcess.transform_ops, "postprocess": PostProcess}; None without one.
    codec: dict[str, Any] | None = None
    # The Paddle Inference settings this version is loaded with (see runtime_settings).
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    # The candidates `--runtime auto` tried at publish, the chosen one among them.
    runtime_trials: tuple[RuntimeTrial, ...] = ()
    # The PaddleX config file copied with the version (hashed like the weights), if any.
    config: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", Task(self.task))
        if not self.inputs:
            raise ValueError(f"{self.model}:{self.version}: manifest declares no inputs")
        names = [f.path for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.model}:{self.version}: duplicate file entries")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["task"] = self.task.value
        data["runtime"] = self.runtime.to_dict()
        data["runtime_trials"] = [trial.to_dict() for trial in self.runtime_trials]
        data["format_version"] = FORMAT_VERSION
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"invalid manifest: a JSON object expected, not {type(data).__name__}")
        try:
            return cls(
                model=data.get("model", ""),
                version=data.get("version", ""),
                format=data["format"],
                files=tuple(FileEntry(**f) for f in data["files"]),
                inputs=tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in data["inputs"]),
                outputs=tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in data["outputs"]),
                created=data["created"],
                sample=data.get("sample"),
                metrics={k: float(v) for k, v in data.get("metrics", {}).items()},
                notes=data.get("notes", ""),
                framework=data.get("framework", ""),
                task=Task.parse(data.get("task", Task.GENERIC.value)),
                codec=_codec(data.get("codec")),
                runtime=RuntimeSettings.from_dict(data.get("runtime")),
                runtime_trials=tuple(RuntimeTrial.from_dict(t) for t in data.get("runtime_trials") or ()),
                config=data.get("config"),
            )
        except KeyError as exc:
            raise ManifestError(f"invalid manifest: the field {exc} is missing") from exc
        except (AttributeError, TypeError, ValueError) as exc:
            raise ManifestError(f"invalid manifest: {exc}") from exc

    @classmethod
    def read(cls, version_dir: Path) -> Manifest:
        path = version_dir / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ManifestError(f"{version_dir} has no {MANIFEST_NAME}") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(data)

    @property
    def names_identity(self) -> bool:
        """Whether the manifest records its model and version (older ones do not)."""
        return bool(self.model and self.version)

    def bind(self, version_dir: Path) -> Manifest:
        """This manifest, checked against the directory it sits in (``<model>/<version>``).

        Raises MisplacedVersionError naming both identities when the manifest names another
        model or version; one that names none takes the directory's.
        """
        model, version = version_dir.parent.name, version_dir.name
        if not self.names_identity:
            return replace(self, model=model, version=version)
        if self.model != model or not _same_version(self.version, version):
            raise MisplacedVersionError(
                f"{model}:{version} holds the manifest of {self.model}:{self.version}: a version "
                f"is bound to its model and version and cannot be copied or renamed; publish "
                f"it as {model}:{version} instead",
                found=f"{self.model}:{self.version}",
                location=f"{model}:{version}",
                path=MANIFEST_NAME,
            )
        return self

    def verify_files(self, version_dir: Path) -> None:
        """Check every recorded file's size and sha256, and that no file was added.

        Raises IntegrityError naming the first file that differs.
        """
        recorded = {f.path: f for f in self.files}
        present = {p for p in content_files(version_dir)}
        for extra in sorted(present - recorded.keys()):
            raise IntegrityError(
                f"{self.model}:{self.version}: file {extra!r} is not in the manifest", path=extra
            )
        for entry in self.files:
            path = version_dir / entry.path
            try:
                size = path.stat().st_size
            except FileNotFoundError as exc:
                raise IntegrityError(
                    f"{self.model}:{self.version}: file {entry.path!r} is missing", path=entry.path
                ) from exc
            if size != entry.size or sha256_file(path) != entry.sha256:
                raise IntegrityError(
                    f"{self.model}:{self.version}: file {entry.path!r} has changed since publishing "
                    f"(sha256 or size differs from the manifest)",
                    path=entry.path,
                )

    def load_sample(self, version_dir: Path) -> dict[str, np.ndarray[Any, Any]]:
        """The sample input batch, as named arrays (empty if the version has none)."""
        if not self.sample:
            return {}
        with np.load(version_dir / self.sample, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}


def _codec(data: Any) -> dict[str, Any] | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("preprocess", []), list):
        raise ValueError("codec must be an object with a preprocess list and a postprocess object")
    return data


def _same_version(recorded: str, directory: str) -> bool:
    try:
        return Version.parse(recorded) == Version.parse(directory)
    except ValueError:
        return False


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_files(version_dir: Path) -> list[str]:
    """Relative paths of a version's content files (everything but manifest and signature)."""
    files = []
    for path in sorted(version_dir.rglob("*")):
        rel = path.relative_to(version_dir).as_posix()
        if path.is_file() and rel not in UNHASHED:
            files.append(rel)
    return files


def hash_files(version_dir: Path) -> tuple[FileEntry, ...]:
    return tuple(
        FileEntry(rel, sha256_file(version_dir / rel), (version_dir / rel).stat().st_size)
        for rel in content_files(version_dir)
    )


def write_sample(path: Path, sample: TensorsIn) -> None:
    with path.open("wb") as handle:
        np.savez(handle, **{name: np.asarray(array) for name, array in sample.items()})  # type: ignore[arg-type]
