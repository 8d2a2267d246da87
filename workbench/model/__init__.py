"""On-disk side of the model layer: versions, manifests, the repository, signing, demo models.

The names below are the layer's front for the faces (the kernel extension, the CLI),
imported on first use so that ``import workbench.model`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench._lazy import lazy_attributes

if TYPE_CHECKING:
    from workbench.model.demo import ALL as DEMO_VERSIONS
    from workbench.model.demo import build_demo_repository
    from workbench.model.manifest import Manifest
    from workbench.model.publishing import AUTO
    from workbench.model.runtime_settings import RuntimeSettings, RuntimeTrial
    from workbench.model.tuning import progress_label, tuning_steps

__all__ = [
    "AUTO",
    "DEMO_VERSIONS",
    "Manifest",
    "RuntimeSettings",
    "RuntimeTrial",
    "build_demo_repository",
    "progress_label",
    "tuning_steps",
]

_WHERE = {
    "AUTO": "publishing",
    "DEMO_VERSIONS": "demo:ALL",  # every demo version build_demo_repository can publish
    "Manifest": "manifest",
    "RuntimeSettings": "runtime_settings",
    "RuntimeTrial": "runtime_settings",
    "build_demo_repository": "demo",
    "progress_label": "tuning",
    "tuning_steps": "tuning",
}

__getattr__ = lazy_attributes(__name__, _WHERE)
