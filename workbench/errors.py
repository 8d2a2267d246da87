"""The one exception tree of the workbench.

Every error the workbench raises on purpose derives from :class:`WorkbenchError`.
Errors from Paddle, Docker, paramiko, nginx and HTTP are translated at the seam
where they occur (``raise ... from exc``), so callers catch ours, not theirs.
Each class carries the exit code the CLI uses for it.

::

    WorkbenchError
    ├── MissingDependencyError      a dependency (or an optional extra) is not installed
    ├── RepositoryError             the model repository on disk
    │   ├── ModelNotFoundError
    │   ├── VersionNotFoundError
    │   ├── AliasError
    │   ├── ManifestError
    │   └── PublishError
    ├── IntegrityError              a file's sha256 or size differs from the manifest
    │   ├── SignatureError          unsigned, or the signature does not verify
    │   └── MisplacedVersionError   a version directory holds another version's manifest
    ├── ModelLoadError              Paddle could not load a version
    ├── InputError                  a request's inputs do not match the signature
    │   └── ImageDecodeError        image bytes a codec cannot decode
    ├── CodecError                  a codec (inference.yml pre/post-processing) cannot be built
    ├── PredictError                Paddle failed while running a valid request
    ├── HubError                    misuse of the version hub
    │   ├── VersionNotLoadedError
    │   └── WorkerDiedError         a version's worker process died (restarting)
    ├── ServingError                talking to a serving instance over HTTP
    ├── DeadlineError               an HTTP request had no full answer within its total deadline
    │                               (also a TimeoutError; beside the deploy layer's HTTP seam)
    ├── (serving, beside the code that raises them)
    │   ├── QueueFull               a version's queue is full (also a RuntimeError); 503
    │   ├── ClientGone              the client left before its request ran; 499
    │   └── HealthCheckFailed       the deep health check found a problem; 503
    └── DeployError                 blue/green deployments
        ├── DeployValueError        an invalid name, host, port, colour or weight
        ├── BackendError            starting or stopping serving instances
        ├── RouterError             rendering, checking or reloading nginx
        ├── StateError              the persisted deployment state
        │   ├── StateCorruptError   state.json cannot be read (restore or delete --force)
        │   └── CanaryConflictError a canary decision made on a status that changed meanwhile
        ├── RolloutError            an action the rollout's phase does not allow
        ├── MetricsError            a colour's traffic could not be read (scrape, Prometheus)
        └── ClusterError            the Kubernetes API refused or failed a call (re-raised at
                                    the seam as BackendError, RouterError or StateError)
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base of every error the workbench raises on purpose."""

    exit_code = 1


class MissingDependencyError(WorkbenchError, ImportError):
    """A dependency is missing; the message says what to install.

    ``extra``: the extra of paddle-workbench that brings ``package``; None for a core
    dependency (the message then names the package itself).
    """

    exit_code = 3

    def __init__(self, package: str, extra: str | None = None) -> None:
        install = package if extra is None else f"'paddle-workbench[{extra}]'"
        super().__init__(f"{package} is not installed; install it with: pip install {install}")
        self.package = package
        self.extra = extra


class RepositoryError(WorkbenchError):
    """Something is wrong with the model repository on disk."""

    exit_code = 4


class ModelNotFoundError(RepositoryError, LookupError):
    """No model of that name in the repository."""


class VersionNotFoundError(RepositoryError, LookupError):
    """No published version (or alias) of that name."""


class AliasError(RepositoryError):
    """An alias name is invalid or points at a version that does not exist."""


class ManifestError(RepositoryError):
    """A manifest is missing, unreadable or invalid."""


class PublishError(RepositoryError):
    """A version could not be published."""


class IntegrityError(WorkbenchError):
    """A version's files differ from what its manifest records."""

    exit_code = 5

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SignatureError(IntegrityError):
    """A version is unsigned, or its signature does not verify, while a key is configured."""


class MisplacedVersionError(IntegrityError):
    """A version directory holds the manifest of another model or version (a copy or rename).

    ``found``: the ``model:version`` the manifest names; ``location``: the directory's.
    """

    def __init__(self, message: str, *, found: str, location: str, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.found = found
        self.location = location


class ModelLoadError(WorkbenchError):
    """Paddle could not load or warm up a version."""

    exit_code = 6


class InputError(WorkbenchError, ValueError):
    """Inputs do not match the model's signature (name, dtype, rank or shape)."""

    exit_code = 2


class ImageDecodeError(InputError):
    """Bytes sent as an image are not an image a codec can decode."""


class CodecError(WorkbenchError, ValueError):
    """A version's codec (its ``inference.yml`` pre/post-processing) names an operation or
    a setting the workbench does not implement."""

    exit_code = 6


class PredictError(WorkbenchError):
    """Paddle failed while running inputs that passed validation."""

    exit_code = 6


class HubError(WorkbenchError, RuntimeError):
    """The version hub was asked for something its state does not allow."""

    exit_code = 7


class WorkerDiedError(HubError):
    """A version's worker process died; the requests it was running fail, it restarts."""


class VersionNotLoadedError(HubError, LookupError):
    """The version is not loaded in this hub."""


class ServingError(WorkbenchError):
    """A serving instance could not be reached or answered with an error."""

    exit_code = 8

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DeployError(WorkbenchError):
    """A blue/green deployment could not do what was asked."""

    exit_code = 9


class DeployValueError(DeployError, ValueError):
    """A deployment value is invalid: its name, a host, a port, a colour or a weight."""

    exit_code = 2


class BackendError(DeployError):
    """A serving backend could not start, find or stop an instance."""


class RouterError(DeployError):
    """The nginx router could not be rendered, checked or reloaded."""


class StateError(DeployError):
    """The persisted deployment state is missing, locked or invalid."""


class StateCorruptError(StateError):
    """A deployment's state file exists but cannot be read."""


class CanaryConflictError(StateError):
    """A canary status was saved over another revision than the one it was decided on."""


class RolloutError(DeployError):
    """The rollout's current phase does not allow that action."""


class MetricsError(DeployError):
    """A colour's traffic could not be read: no instance answered its scrape, or Prometheus failed."""


class ClusterError(DeployError):
    """The Kubernetes API refused or failed a call; ``status`` is its HTTP status (0: unreachable)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
