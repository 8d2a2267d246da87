"""Which modules a workbench command line loads, seen from a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

#: never needed to show help, talk to nginx or read the state
HEAVY = (
    "numpy", "pandas", "paddle", "docker", "paramiko", "starlette", "uvicorn", "ipywidgets",
    "bokeh", "IPython", "model_signing", "sklearn", "kubernetes",
)

_PROBE = """
import json, sys
from workbench.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)
"""


def loaded_by(*argv: str, env: dict[str, str] | None = None, code: str | None = None) -> set[str]:
    """Top-level packages imported after running ``workbench ARGV`` (or Python ``code``)."""
    script = _PROBE if code is None else (
        code + "\nimport json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})),"
        " file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )
    last = proc.stderr.strip().splitlines()[-1]
    return set(json.loads(last))
