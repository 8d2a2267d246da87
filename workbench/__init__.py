"""paddle-workbench: Paddle model versions side by side, hot swap, blue/green and canary serving.

The public API is re-exported here; everything else is internal and may change.
Paddle, Docker, paramiko and the notebook packages are imported only where used.
"""

from __future__ import annotations

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
from workbench.model.repository import ModelRepository
from workbench.model.version import ModelRef, Version
from workbench.runtime.compare import Agreement, Comparison, compare
from workbench.runtime.device import Device
from workbench.runtime.hub import HubEvent, Prediction, VersionHub
from workbench.runtime.loaded import LoadedVersion, LoadState
from workbench.runtime.memory import MemoryUsage
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
