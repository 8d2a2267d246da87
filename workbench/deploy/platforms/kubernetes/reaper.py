"""Scale a parked colour down when its delay is over, without waiting for the next action.

After a switch, :class:`~workbench.deploy.platforms.kubernetes.router.KubernetesRouter` marks the
colour that lost its traffic with the time it may be scaled down, and starts this module
as a detached process (nobody's child, like the serving instances) that sleeps until
then, calls :meth:`~workbench.deploy.platforms.kubernetes.router.KubernetesRouter.reap` once and
exits. A colour that took traffic again meanwhile lost its mark, so the reaper leaves it
alone. Every router action also reaps, so a reaper that never ran (the machine slept,
``WORKBENCH_K8S_REAPER=off``) only delays the scale-down to the next action.

    python -m workbench.deploy.platforms.kubernetes DEPLOYMENT AT  # options: JSON in $WORKBENCH_K8S_OPTIONS

The entry point (:mod:`workbench.deploy.platforms.kubernetes.__main__`) builds the backend
and router and passes the router in: this module knows only that a router can ``reap()``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from workbench.deploy.spawn import launch_detached
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

OPTIONS_ENV = "WORKBENCH_K8S_OPTIONS"
SWITCH_ENV = "WORKBENCH_K8S_REAPER"  # "off": no background reaper


def launch(deployment: str, at: float, options: Mapping[str, object], log_path: Path | None) -> int | None:
    """Start a detached reaper for ``deployment`` due at ``at``; its pid (None if off or failed)."""
    if os.environ.get(SWITCH_ENV, "on").lower() in ("off", "0", "no", "false"):
        return None
    env = {**os.environ, OPTIONS_ENV: json.dumps({k: v for k, v in options.items() if v is not None})}
    argv = [sys.executable, "-m", "workbench.deploy.platforms.kubernetes", deployment, f"{at:.3f}"]
    try:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        pid, _ = launch_detached(argv, env, log_path or Path(os.devnull), grace=0.0)
    except OSError as exc:
        log.warning("%s: no background scale-down (%s); the next action does it", deployment, exc)
        return None
    return pid


class Reaper(Protocol):
    """What the reaper needs of a router: scale down the colours whose delay is over."""

    def reap(self) -> list[str]: ...


def reap_when_due(deployment: str, at: float, router: Reaper) -> int:
    """Sleep until ``at``, then scale down ``deployment``'s parked colours through
    ``router``; the process' exit status."""
    time.sleep(max(0.0, min(at - time.time(), 24 * 3600.0)))
    try:
        parked = router.reap()
    except WorkbenchError as exc:
        log.warning("%s: scale-down failed: %s", deployment, exc)
        return 1
    log.info("%s: scaled down %s", deployment, ", ".join(parked) or "nothing (traffic came back)")
    return 0


def options_from_env() -> dict[str, object]:
    """The backend options :func:`launch` passed to the detached process."""
    options: dict[str, object] = json.loads(os.environ.get(OPTIONS_ENV, "{}"))
    return options
