"""A pipeline version: an OCR pipeline naming the model versions of its stages.

A pipeline is published, signed and verified like a model, under its own name
(``<root>/<pipeline>/<version>/``), but holds no weights: its ``workbench.json``
names the exact stage versions, each pinned by the sha256 of that version's own
manifest (which in turn pins its files and runtime settings). The shape::

    {
      "kind": "pipeline",
      "format_version": 1,
      "model": "ocr",
      "version": "5.0.0",
      "created": "2026-12-06T15:00:00+00:00",
      "notes": "",
      "stages": [
        {"role": "det", "model": "ocr-det", "version": "5.0.0",
         "task": "text-detection", "manifest_sha256": "<sha256 of ocr-det/5.0.0/workbench.json>"},
        {"role": "cls", "model": "ocr-cls", "version": "2.0.0",
         "task": "classification", "manifest_sha256": "..."},
        {"role": "rec", "model": "ocr-rec", "version": "5.0.0",
         "task": "text-recognition", "manifest_sha256": "..."}
      ]
    }

Roles run in the order det, cls (optional: text-direction classification of each
detected box), rec. Verifying a pipeline checks its own signature (when a key is
configured), then verifies every stage version and that its manifest still has the
pinned sha256, so a stage re-signed with other settings or replaced is refused.
Model manifests carry ``"kind": "model"`` (or none, before this field); reading a
pipeline as a model raises a ManifestError that says it is a pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.errors import IntegrityError, ManifestError, MisplacedVersionError
from workbench.model.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    PIPELINE_KIND,
    content_files,
    sha256_file,
)
from workbench.model.version import Version

if TYPE_CHECKING:
    from pathlib import Path

ROLES = ("det", "cls", "rec")
REQUIRED_ROLES = ("det", "rec")


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline: its role and the exact version that plays it."""

    role: str
    model: str
    version: str
    task: str
    manifest_sha256: str

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.version}"


@dataclass(frozen=True)
class PipelineManifest:
    """What a published pipeline version runs (see the module docstring)."""

    model: str
    version: str
    stages: tuple[Stage, ...]
    created: str
    notes: str = ""

    def __post_init__(self) -> None:
        roles = [stage.role for stage in self.stages]
        unknown = [role for role in roles if role not in ROLES]
        if unknown:
            raise ValueError(f"unknown pipeline role {unknown[0]!r}; roles: {', '.join(ROLES)}")
        if len(set(roles)) != len(roles):
            raise ValueError("each pipeline role may be given once")
        missing = [role for role in REQUIRED_ROLES if role not in roles]
        if missing:
            raise ValueError(f"an OCR pipeline needs a {missing[0]} stage (roles det, optional cls, rec)")
        object.__setattr__(self, "stages", tuple(sorted(self.stages, key=lambda s: ROLES.index(s.role))))

    def stage(self, role: str) -> Stage | None:
        return next((s for s in self.stages if s.role == role), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": PIPELINE_KIND,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "version": self.version,
            "created": self.created,
            "notes": self.notes,
            "stages": [vars(stage) for stage in self.stages],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> PipelineManifest:
        if not isinstance(data, dict) or data.get("kind") != PIPELINE_KIND:
            raise ManifestError("not a pipeline manifest: its kind must be 'pipeline'")
        try:
            return cls(
                model=str(data["model"]),
                version=str(data["version"]),
                stages=tuple(Stage(**stage) for stage in data["stages"]),
                created=str(data["created"]),
                notes=str(data.get("notes", "")),
            )
        except KeyError as exc:
            raise ManifestError(f"invalid pipeline manifest: the field {exc} is missing") from exc
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"invalid pipeline manifest: {exc}") from exc

    @classmethod
    def read(cls, version_dir: Path) -> PipelineManifest:
        try:
            data = json.loads((version_dir / MANIFEST_NAME).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"cannot read {version_dir / MANIFEST_NAME}: {exc}") from exc
        manifest = cls.from_dict(data)
        model, version = version_dir.parent.name, version_dir.name
        if manifest.model != model or Version.parse(manifest.version) != Version.parse(version):
            raise MisplacedVersionError(
                f"{model}:{version} holds the manifest of {manifest.model}:{manifest.version}: a "
                f"pipeline is bound to its name and version; publish it as {model}:{version} instead",
                found=f"{manifest.model}:{manifest.version}",
                location=f"{model}:{version}",
                path=MANIFEST_NAME,
            )
        return manifest

    def verify_files(self, version_dir: Path) -> None:
        """A pipeline directory holds its manifest (and signature) only."""
        extra = content_files(version_dir)
        if extra:
            raise IntegrityError(
                f"{self.model}:{self.version}: file {extra[0]!r} is not part of the pipeline", path=extra[0]
            )


def pin(role: str, model: str, version: Version, stage_dir: Path, task: str) -> Stage:
    """The stage record of ``model:version`` (its manifest pinned by sha256)."""
    return Stage(role, model, str(version), task, sha256_file(stage_dir / MANIFEST_NAME))
