"""Real ``workbench serve`` instances per colour for deploy-layer integration tests."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from tests.serving.conftest import ServeProcess

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path


@contextlib.contextmanager
def serving_colors(demo_repo: Path, logs: Path, colors: Mapping[str, Sequence[str]],
                    env: dict[str, str] | None = None) -> Iterator[dict[str, ServeProcess]]:
    """Start one digits instance per colour with its extra ``workbench serve`` arguments
    (e.g. ``{"blue": ["--version", "1.0.0"], ...}``) and ``env``, ready; stop them all afterwards."""
    common = ["--repo", str(demo_repo), "--model", "digits", "--workers", "1", "--no-access-log"]
    servers = {color: ServeProcess([*common, *args], logs / f"{color}.log", env)
               for color, args in colors.items()}
    try:
        for server in servers.values():
            server.start(wait_ready=False)
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()
