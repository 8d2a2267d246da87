"""The prepared rollback: what a rollback installs, made in advance, and the router's brake.

Whenever an action leaves a deployment in a state a rollback can leave (a verified or
promoted candidate, no canary under way), :func:`prepare` renders the router
configuration that rollback would install, checks it with ``nginx -t`` and keeps it in
the router's workdir, with the state revision it was made for::

    <workdir>/nginx.conf.rollback   the checked configuration (mode 0600, as installed)
    <workdir>/rollback.json         {"state_revision", "table", "revision", "url",
                                     "conf", "prepared", "pid_file", "router_lock",
                                     "state_lock", "router_revision", "brake"}

``rollback.json`` is written last, so it only names a complete configuration. The
emergency brake (:mod:`workbench.cli.brake`) uses it only when the state file still
has that revision (under the deployment's lock): it creates the running
configuration's brake file (``brake``, :func:`~workbench.deploy.routing.brake_file` of
``router_revision``), which sends every request to stable with no reload, before
importing this layer; the ordinary rollback then installs the rolled-back
configuration. Any other state write bumps the revision, so a stale file is never
used. :func:`tidy` removes the brake files of configurations no longer installed, and
:func:`braked` tells whether the installed one is braked.

During a canary it is kept too, for no state revision (the canary saves its status at
every interval, so the brake's switch never uses it): the controller's rollback switches
to it (:func:`switch`) when the table a rollback installs is still the one it was made
for, then the ordinary rollback runs as above.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from workbench._fs import atomic_path, write_atomic
from workbench.deploy.routing import BRAKE_PREFIX, CONF_FILE, PID_FILE, brake_file
from workbench.errors import RouterError

if TYPE_CHECKING:
    from workbench.deploy.nginx import NginxRouter
    from workbench.deploy.routing import RoutingTable

__all__ = ["PREPARED_CONF", "PREPARED_FILE", "braked", "discard", "prepare", "switch", "tidy"]

log = logging.getLogger(__name__)

PREPARED_FILE = "rollback.json"
PREPARED_CONF = CONF_FILE + ".rollback"


def discard(workdir: Path) -> None:
    """Remove the prepared rollback of ``workdir``, if any (the description first)."""
    for name in (PREPARED_FILE, PREPARED_CONF):
        with contextlib.suppress(OSError):
            (workdir / name).unlink(missing_ok=True)


def prepare(router: NginxRouter, table: RoutingTable, state_revision: int, state_lock: Path) -> bool:
    """Keep the checked configuration of ``table`` for state revision ``state_revision``
    (True), or none at all when it cannot be made (False; the rollback then takes the
    ordinary path). A configuration kept already with the same text is not checked again
    (each step of a canary keeps the one made when the candidate was verified)."""
    workdir = router.workdir
    conf = workdir / PREPARED_CONF
    text = router.render(table)
    try:
        kept = conf.read_text(encoding="utf-8") if conf.exists() else None
    except OSError:
        kept = None
    (workdir / PREPARED_FILE).unlink(missing_ok=True)  # the description goes first
    try:
        installed = router.table
        if installed is None:
            raise RouterError("no configuration installed yet")
        if kept != text:  # the same configuration was checked already: only say for what
            with atomic_path(conf) as tmp:
                tmp.write_text(text, encoding="utf-8")
                router.runner.check(tmp)
        write_atomic(workdir / PREPARED_FILE, json.dumps({
            "state_revision": state_revision,
            "table": table.to_dict(),
            "revision": table.revision,
            "url": table.url,
            "conf": str(router.conf_path),
            "prepared": str(conf),
            "pid_file": str(workdir / PID_FILE),
            "router_lock": str(router.lock_path),
            "state_lock": str(state_lock),
            "router_revision": installed.revision,
            "brake": str(workdir / brake_file(installed.revision)),
        }, indent=2))
    except (OSError, RouterError) as exc:
        log.warning("%s: no prepared rollback: %s", workdir, exc)
        discard(workdir)
        return False
    return True


def braked(router: NginxRouter) -> bool:
    """Whether the installed configuration's brake is pulled: every request to stable."""
    try:
        installed = router.table
    except RouterError:
        return False
    return installed is not None and (router.workdir / brake_file(installed.revision)).exists()


def tidy(router: NginxRouter) -> None:
    """Remove the brake files of configurations that are no longer installed (the
    installed one's stays: it routes by it)."""
    try:
        installed = router.table
    except RouterError:
        return
    keep = brake_file(installed.revision) if installed is not None else None
    for path in router.workdir.glob(BRAKE_PREFIX + "*"):
        if path.name != keep:
            with contextlib.suppress(OSError):
                path.unlink()


def switch(router: NginxRouter, table: RoutingTable) -> bool:
    """Install the prepared configuration if it was made for ``table`` (its revision) and
    return once the router serves it (True); False, with nothing changed, when none was
    prepared for it or the router does not run. The prepared files are used up either way.

    The canary's controller rolls back through it (the configuration was made and checked
    when the step began), so its rollback skips rendering and ``nginx -t``."""
    workdir = router.workdir
    conf = workdir / PREPARED_CONF
    try:
        kept = json.loads((workdir / PREPARED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(kept, dict) or kept.get("revision") != table.revision or not conf.exists():
        return False
    try:
        if conf.read_text(encoding="utf-8") != router.render(table):
            return False  # not what was checked for this table: the ordinary path
        installed = router.table
        brake = kept.get("brake")
        current = installed is not None and kept.get("router_revision") == installed.revision
        if isinstance(brake, str) and current:
            Path(brake).touch()  # every request to stable now, before the reload
        router.install_checked(conf, table)
    except (OSError, RouterError) as exc:
        log.warning("%s: the prepared rollback was not installed: %s", workdir, exc)
        return False
    finally:
        discard(workdir)
    return True
