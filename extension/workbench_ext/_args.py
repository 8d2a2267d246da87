"""IPython's ``@magic_arguments`` decorators, typed.

IPython's own are unannotated, so under ``mypy --strict`` every verb they decorate
would become untyped. These keep the decorated function's type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

from IPython.core import magic_arguments as _ipython

if TYPE_CHECKING:
    from collections.abc import Callable

F = TypeVar("F", bound="Callable[..., Any]")

_magic_arguments: Callable[..., Any] = _ipython.magic_arguments
_argument: Callable[..., Any] = _ipython.argument


def magic_arguments(name: str | None = None) -> Callable[[F], F]:
    """Give the decorated magic or verb an argparse parser (``func.parser``) named ``name``."""
    return cast("Callable[[F], F]", _magic_arguments(name))


def argument(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """Add one argparse argument to the decorated function's parser."""
    return cast("Callable[[F], F]", _argument(*args, **kwargs))
