"""The extension is a face over workbench's public API, and its own modules form no import cycle.

Read from the source (every import: top level, function-local and under
TYPE_CHECKING), so a cycle hidden in a function or an annotation counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import workbench

EXTENSION = Path(__file__).resolve().parents[2] / "extension" / "workbench_ext"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in EXTENSION.rglob("*.py"):
        parts = list(path.relative_to(EXTENSION.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for module, names in _imports(path):
            # `from workbench_ext import ops` imports the module ops, not the package's __init__
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            if len(targets) < len(names) or not names:
                targets.append(module)
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                cycles.append([*path, start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for name in sorted(graph):
        walk(name, name, [name])
    return cycles


def test_the_extension_has_no_import_cycle() -> None:
    graph = _graph()
    assert "workbench_ext.deploy_verbs" in graph["workbench_ext.magics"]  # magics use the deploy verbs
    assert _cycles(graph) == []


def test_the_extension_uses_only_workbench_public_api() -> None:
    private = []
    not_exported = []
    for name, path in _modules().items():
        for module, names in _imports(path):
            if module != "workbench" and not module.startswith("workbench."):
                continue
            if any(part.startswith("_") for part in module.split(".")):
                private.append(f"{name}: {module}")
            if module == "workbench":
                not_exported += [f"{name}: {n}" for n in names if n not in workbench.__all__]
    assert private == [], private
    assert not_exported == [], not_exported
