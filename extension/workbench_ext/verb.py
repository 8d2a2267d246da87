"""What every ``%paddle`` verb shares: the :class:`Call` it gets and the registry decorator.

The magics and the deploy verbs both build on this module (it sits below both),
so neither imports the other to register its verbs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench_ext._args import argument
from workbench_ext.errors import SessionError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from workbench_ext.state import Session

#: A verb: a plain function of the call and its parsed arguments.
Verb = Any


@dataclass
class Call:
    """What a verb gets besides its arguments: the shell, the session and the cell body."""

    shell: Any
    session: Session
    cell: str | None = None

    def eval(self, source: str) -> Any:
        """Evaluate an expression (a variable name, ``x[:10]``...) in the user's namespace."""
        try:
            return eval(source, self.shell.user_global_ns, self.shell.user_ns)
        except NameError as exc:
            raise SessionError(f"{exc} in the notebook's namespace") from None
        except SyntaxError as exc:
            raise SessionError(f"cannot evaluate {source!r}: {exc.msg}") from None

    def run_cell_value(self) -> Any:
        """Run the cell body and return the value of its last expression (like IPython's Out)."""
        source = (self.cell or "").strip()
        if not source:
            raise SessionError("the cell is empty: its last line should be the input (an expression)")
        tree = ast.parse(source)
        if not tree.body or not isinstance(tree.body[-1], ast.Expr):
            raise SessionError("the cell's last line must be an expression giving the input")
        statement = tree.body.pop()
        assert isinstance(statement, ast.Expr)
        last = ast.Expression(statement.value)
        namespace = self.shell.user_ns
        if tree.body:
            exec(compile(tree, "<paddle cell>", "exec"), namespace)
        return eval(compile(last, "<paddle cell>", "eval"), namespace)

    def value(self, expression: str | None, what: str, *, required: bool = False) -> Any:
        """An input from ``--data EXPR``, else from the cell body, else None."""
        if expression:
            return self.eval(expression)
        if self.cell is not None and self.cell.strip():
            return self.run_cell_value()
        if required:
            raise SessionError(f"give the {what} with --{what} EXPR or as the cell's expression")
        return None


def verb(name: str, table: dict[str, Verb]) -> Callable[[Verb], Verb]:
    """Register the decorated function in ``table`` under ``name``."""

    def register(func: Verb) -> Verb:
        table[name] = func
        return func

    return register


def progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False)


quiet = argument("-q", "--quiet", action="store_true", help="No progress bar.")
