"""Run a script in a fresh interpreter: for checks on what a front process imports."""

from __future__ import annotations

import subprocess
import sys

NO_PADDLE = (
    "leaked = sorted(m for m in sys.modules if m == 'paddle' or m.startswith('paddle.'))\n"
    "assert not leaked, f'paddle was imported: {leaked[:5]}'\n"
)


def run_python(script: str, timeout: float = 180) -> str:
    """Run ``script`` with this interpreter; fail with its stderr unless it exits 0; its stdout."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
