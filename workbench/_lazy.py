"""Module attributes imported on first use, so importing a package stays cheap."""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # typing is not imported by `import workbench` (the brake runs first)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``name`` from
    ``package.<where[name]>`` on first use and caches it in the package.

    ``where[name]`` may be ``"module:attribute"`` when the front offers ``attribute`` of
    ``module`` under another name (one that says what it is outside its module).
    """

    def __getattr__(name: str) -> Any:
        found = where.get(name)
        if found is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = found.partition(":")
        value = getattr(import_module(f"{package}.{module}"), attribute or name)
        setattr(import_module(package), name, value)  # later look-ups skip this function
        return value

    return __getattr__
