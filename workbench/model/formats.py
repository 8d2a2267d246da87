"""Which Paddle serialisation a version directory holds.

- ``pir``: Paddle 3 PIR program, ``<prefix>.json`` + ``<prefix>.pdiparams``
- ``pdmodel``: Paddle 2 program, ``<prefix>.pdmodel`` + ``<prefix>.pdiparams``
- ``legacy``: Fluid-era ``__model__`` + ``__params__`` (combined parameters)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.errors import RepositoryError
from workbench.model.manifest import MANIFEST_NAME


@dataclass(frozen=True)
class ModelFiles:
    """The program and parameter files of one version."""

    format: str
    program: Path
    params: Path | None


def detect(directory: Path) -> ModelFiles:
    """Find the model files in ``directory``; raise RepositoryError if none or several match."""
    found: list[ModelFiles] = []
    for program in sorted(directory.glob("*.json")):
        if program.name == MANIFEST_NAME:
            continue
        params = program.with_suffix(".pdiparams")
        if params.exists():
            found.append(ModelFiles("pir", program, params))
    for program in sorted(directory.glob("*.pdmodel")):
        params = program.with_suffix(".pdiparams")
        found.append(ModelFiles("pdmodel", program, params if params.exists() else None))
    legacy = directory / "__model__"
    if legacy.exists():
        params = directory / "__params__"
        found.append(ModelFiles("legacy", legacy, params if params.exists() else None))
    if not found:
        raise RepositoryError(
            f"no Paddle model in {directory}: expected inference.json + inference.pdiparams "
            "(Paddle 3), inference.pdmodel + inference.pdiparams (Paddle 2) or __model__ + __params__"
        )
    if len(found) > 1:
        names = ", ".join(f.program.name for f in found)
        raise RepositoryError(f"several Paddle models in {directory} ({names}); keep one per version")
    return found[0]
