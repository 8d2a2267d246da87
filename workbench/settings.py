"""Where the workbench keeps things, read from the environment.

- ``WORKBENCH_HOME``: state, logs and deployments (default ``~/.workbench``)
- ``WORKBENCH_REPO``: the model repository (default ``$WORKBENCH_HOME/models``)
- ``WORKBENCH_VERIFY_KEY``: a public key (PEM); when set, unsigned or tampered
  versions are refused
- ``WORKBENCH_SIGNING_KEY``: a private key (PEM) used by ``publish`` and ``sign``
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class Settings:
    home: Path
    repo: Path
    verify_key: Path | None = None
    signing_key: Path | None = None

    @classmethod
    def from_env(cls) -> Settings:
        home = _path("WORKBENCH_HOME") or Path.home() / ".workbench"
        return cls(
            home=home,
            repo=_path("WORKBENCH_REPO") or home / "models",
            verify_key=_path("WORKBENCH_VERIFY_KEY"),
            signing_key=_path("WORKBENCH_SIGNING_KEY"),
        )
