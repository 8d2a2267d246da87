"""paddle-workbench: Paddle model versions side by side, hot swap, blue/green and canary serving.

The public API is re-exported here; everything else is internal and may change.
Names are imported on first use (module ``__getattr__``), so ``import workbench`` and
``workbench --help`` load neither numpy, pandas, Paddle, Docker nor the notebook packages.
"""

from __future__ import annotations

from workbench._lazy import lazy_attributes

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (the brake runs first)

if TYPE_CHECKING:
    from workbench.errors import (
        HubError,
        InputError,
        IntegrityError,
        ModelLoadError,
        ModelNotFoundError,
        PredictError,
        RepositoryError,
        SignatureError,
        VersionNotFoundError,
        VersionNotLoadedError,
        WorkbenchError,
        WorkerDiedError,
    )
    from workbench.model.demo import build_demo_repository, digits_dataset
    from workbench.model.manifest import Manifest, TensorSpec
    from workbench.model.version import ModelRef, Version
    from workbench.runtime.compare import Agreement, Comparison, compare
    from workbench.runtime.device import Device
    from workbench.runtime.hub import HubEvent, Prediction, VersionHub
    from workbench.runtime.loaded import LoadedVersion, LoadState
    from workbench.runtime.memory import MemoryUsage
    from workbench.runtime.repository import ModelRepository
    from workbench.runtime.watcher import RepositoryWatcher
    from workbench.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "Agreement",
    "Comparison",
    "Device",
    "HubError",
    "HubEvent",
    "InputError",
    "IntegrityError",
    "LoadState",
    "LoadedVersion",
    "Manifest",
    "MemoryUsage",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRef",
    "ModelRepository",
    "PredictError",
    "Prediction",
    "RepositoryError",
    "RepositoryWatcher",
    "Settings",
    "SignatureError",
    "TensorSpec",
    "Version",
    "VersionHub",
    "VersionNotFoundError",
    "VersionNotLoadedError",
    "WorkbenchError",
    "WorkerDiedError",
    "build_demo_repository",
    "compare",
    "digits_dataset",
]

# Where each public name lives (module under ``workbench``).
_WHERE = {
    "Agreement": "runtime.compare",
    "Comparison": "runtime.compare",
    "Device": "runtime.device",
    "HubError": "errors",
    "HubEvent": "runtime.hub",
    "InputError": "errors",
    "IntegrityError": "errors",
    "LoadState": "runtime.loaded",
    "LoadedVersion": "runtime.loaded",
    "Manifest": "model.manifest",
    "MemoryUsage": "runtime.memory",
    "ModelLoadError": "errors",
    "ModelNotFoundError": "errors",
    "ModelRef": "model.version",
    "ModelRepository": "runtime.repository",  # the model layer's, with Paddle as its probe
    "PredictError": "errors",
    "Prediction": "runtime.hub",
    "RepositoryError": "errors",
    "RepositoryWatcher": "runtime.watcher",
    "Settings": "settings",
    "SignatureError": "errors",
    "TensorSpec": "model.manifest",
    "Version": "model.version",
    "VersionHub": "runtime.hub",
    "VersionNotFoundError": "errors",
    "VersionNotLoadedError": "errors",
    "WorkbenchError": "errors",
    "WorkerDiedError": "errors",
    "build_demo_repository": "model.demo",
    "compare": "runtime.compare",
    "digits_dataset": "model.demo",
}


__getattr__ = lazy_attributes(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
