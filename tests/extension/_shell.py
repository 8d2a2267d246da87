"""Running notebook-like cells in a real InteractiveShell."""

from __future__ import annotations

from typing import Any


def run(shell: Any, source: str) -> Any:
    """Run a cell like a notebook does and re-raise what it raised; return its value."""
    result = shell.run_cell(source, store_history=False)
    result.raise_error()
    return result.result
