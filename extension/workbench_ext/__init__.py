"""The workbench's IPython extension: ``%load_ext workbench_ext``.

Adds the ``%paddle`` line and cell magics, rich display of workbench objects,
and the panels (``%paddle panel versions|compare|deploy``). Loading twice is a
no-op, and says nothing: a kernel whose profile auto-loads the extension runs
a tutorial's ``%load_ext workbench_ext`` quietly (IPython's own magic would print
"already loaded ... use %reload_ext"). Unloading removes the magics and frees the
versions this kernel loaded.
"""

from __future__ import annotations

import logging
from typing import Any

__version__ = "0.1.0"
__all__ = ["get_session", "load_ipython_extension", "unload_ipython_extension"]

log = logging.getLogger(__name__)
_LOADED: set[int] = set()
#: IPython's ``%load_ext`` per shell, while ours stands in for it.
_LOAD_EXT: dict[int, Any] = {}


def get_session(shell: Any = None) -> Any:
    """The per-kernel :class:`~workbench_ext.state.Session` (repository, hubs, servers)."""
    from workbench_ext.state import get_session as _get

    return _get(shell)


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and display formatters on ``ipython`` (idempotent)."""
    if id(ipython) in _LOADED:
        return
    from workbench_ext import display
    from workbench_ext.magics import PaddleMagics
    from workbench_ext.state import get_session as _get

    ipython.register_magics(PaddleMagics(ipython, _get(ipython)))
    display.register(ipython)
    _quiet_load_ext(ipython)
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
    original = _LOAD_EXT.pop(id(ipython), None)
    if original is not None:
        magics["line"]["load_ext"] = original
    drop_session(ipython)
    _LOADED.discard(id(ipython))


def _quiet_load_ext(ipython: Any) -> None:
    """``%load_ext workbench_ext`` when it is loaded already: a no-op, like loading it again."""
    original = ipython.magics_manager.magics["line"].get("load_ext")
    if original is None or id(ipython) in _LOAD_EXT:
        return

    def load_ext(line: str) -> Any:
        if line.strip() == __name__ and __name__ in ipython.extension_manager.loaded:
            return None
        return original(line)

    load_ext.__doc__ = original.__doc__
    _LOAD_EXT[id(ipython)] = original
    ipython.register_magic_function(load_ext, "line", "load_ext")
