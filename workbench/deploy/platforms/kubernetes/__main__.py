"""The detached reaper's entry point: ``python -m workbench.deploy.platforms.kubernetes DEPLOYMENT AT``.

Builds the backend (options from :data:`~.reaper.OPTIONS_ENV`) and the deployment's router,
and hands the router to :func:`~.reaper.reap_when_due`, so the reaper does not import the
router that launches it.
"""

from __future__ import annotations

import logging
import sys

from workbench.deploy.platforms.kubernetes.backend import KubernetesBackend
from workbench.deploy.platforms.kubernetes.reaper import options_from_env, reap_when_due
from workbench.deploy.platforms.kubernetes.router import KubernetesRouter
from workbench.errors import WorkbenchError

log = logging.getLogger("workbench.deploy.platforms.kubernetes.reaper")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    deployment, at = argv[0], float(argv[1])
    try:
        backend = KubernetesBackend(**options_from_env())  # type: ignore[arg-type]
        router = KubernetesRouter(deployment, backend, background=False)
    except WorkbenchError as exc:
        log.warning("%s: scale-down failed: %s", deployment, exc)
        return 1
    return reap_when_due(deployment, at, router)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
