"""IPython's display functions, typed (IPython's own are unannotated)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython import get_ipython as _get_ipython
from IPython.display import display as _display
from IPython.display import publish_display_data as _publish

if TYPE_CHECKING:
    from collections.abc import Callable

_shell: Callable[[], Any] = _get_ipython
display: Callable[..., Any] = _display
publish_display_data: Callable[..., None] = _publish


def get_ipython() -> Any:
    """The running shell, or None outside IPython."""
    return _shell()


def in_kernel() -> bool:
    """True in a Jupyter kernel (a frontend draws widgets), False in terminal IPython or none."""
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
