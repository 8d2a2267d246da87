"""The import contracts in pyproject.toml (`lint-imports`) hold, and they catch a break.

Each test runs import-linter on a copy of the packages in a temp directory, so the
checkout is never written to; the broken cases add one import that points the wrong way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (dev extra)")


def _copy(tmp_path: Path) -> Path:
    """workbench/, workbench_ext/ and pyproject.toml, side by side in ``tmp_path``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "workbench", tmp_path / "workbench", ignore=ignore)
    shutil.copytree(ROOT / "extension" / "workbench_ext", tmp_path / "workbench_ext", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports puts its working directory first on sys.path: the copy, not the checkout
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=where, env=env,
                          capture_output=True, text=True, timeout=300)


def _add_import(path: Path, line: str) -> None:
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    assert sep, path
    path.write_text(f"{head}{sep}\n{line}\n{rest}")


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken" in result.stdout


def test_no_cycle_is_excused() -> None:
    """The acyclic contract holds with no ignored import (verification, which probes the
    deployment state, lives beside the state, not inside rollout/ that the state uses)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "no-cycles"]
    assert not contract.get("ignore_imports"), contract["ignore_imports"]


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the model layer reaching up into deploy
        ("workbench/model/manifest.py", "import workbench.deploy.names", "Layers"),
        # one platform importing another
        ("workbench/deploy/platforms/process/backend.py", "import workbench.deploy.platforms.docker.engine",
         "The platforms do not import each other"),
        # the deploy core naming a platform instead of going through the factories
        ("workbench/deploy/state.py", "import workbench.deploy.platforms.kubernetes.client",
         "The deploy core names no platform"),
        # a cycle hidden in a function would still be an import: client <-> traffic
        ("workbench/deploy/client.py", "import workbench.deploy.traffic", "No import cycles"),
        # the rollout reaching back to the state that holds its phase and canary status
        ("workbench/deploy/rollout/phases.py", "import workbench.deploy.state", "No import cycles"),
        # the extension reaching past the public API
        ("workbench_ext/state.py", "import workbench.deploy.platforms.process.backend",
         "The extension uses only workbench's public API"),
    ],
)
def test_an_import_against_the_arrows_breaks_a_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    where = _copy(tmp_path)
    _add_import(where / module, line)
    result = _lint(where)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout


def _sources() -> list[Path]:
    return sorted([*(ROOT / "workbench").rglob("*.py"), *(ROOT / "extension" / "workbench_ext").rglob("*.py")])


def test_latency_percentiles_are_computed_in_one_place() -> None:
    """p50/p90/p99 come from workbench.runtime.latency; elsewhere is a second definition."""
    import re

    own = re.compile(r"np\.(percentile|quantile)\([^)]*\b(50|90|99|0\.5|0\.9|0\.99)\b(?!\.)")
    home = ROOT / "workbench" / "runtime" / "latency.py"
    found = [f"{path.relative_to(ROOT)}:{n}" for path in _sources() if path != home
             for n, line in enumerate(path.read_text().splitlines(), 1) if own.search(line)]
    assert found == [], found


def test_code_spells_color_one_way() -> None:
    """Identifiers say "color" (the type is Color, the header x-deploy-color); CLI flags,
    JSON keys and prose keep their spelling."""
    import tokenize

    named: set[str] = set()
    for path in _sources():
        with path.open("rb") as handle:
            if any(t.type == tokenize.NAME and "colour" in t.string.lower()
                   for t in tokenize.tokenize(handle.readline)):
                named.add(str(path.relative_to(ROOT)))
    assert named == set(), sorted(named)


#: A module past this many bytes holds more than one concept: split it.
MAX_MODULE_BYTES = 30_000


def test_no_module_is_over_30_kb() -> None:
    sizes = {str(p.relative_to(ROOT)): p.stat().st_size for p in _sources()}
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_BYTES} == {}
