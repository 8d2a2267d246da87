"""The workbench's IPython extension: ``%load_ext workbench_ext``.

Adds the ``%paddle`` line and cell magics, rich display of workbench objects,
and the panels (``%paddle panel versions|compare|deploy``). Loading twice is a
no-op; unloading removes the magics and frees the versions this kernel loaded.
"""

from __future__ import annotations

import logging
from typing import Any

__version__ = "0.1.0"
__all__ = ["get_session", "load_ipython_extension", "unload_ipython_extension"]

log = logging.getLogger(__name__)
_LOADED: set[int] = set()


def get_session(shell: Any = None) -> Any:
    """The per-kernel :class:`~workbench_ext.state.Session` (repository, hubs, servers)."""
    from workbench_ext.state import get_session as _get

    return _get(shell)


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and display formatters on ``ipython`` (idempotent)."""
    if id(ipython) in _LOADED:
        return
    from workbench._paddle import quiet

    quiet()  # before anything imports paddle in this kernel
    from workbench_ext import display
    from workbench_ext.magics import PaddleMagics
    from workbench_ext.state import get_session as _get

    ipython.register_magics(PaddleMagics(ipython, _get(ipython)))
    display.register(ipython)
    _LOADED.add(id(ipython))
    log.debug("workbench_ext loaded")


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and formatters; stop served models and free loaded versions."""
    if id(ipython) not in _LOADED:
        return
    from workbench_ext import display
    from workbench_ext.state import drop_session

    magics = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        magics[kind].pop("paddle", None)
    ipython.magics_manager.registry.pop("PaddleMagics", None)
    display.unregister(ipython)
    drop_session(ipython)
    _LOADED.discard(id(ipython))
