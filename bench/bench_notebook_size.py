"""How many bytes a saved tutorial carries: BokehJS inlined (before) against fetched from the server (now).

    uv run --extra cpu --extra notebook --extra dev python bench/bench_notebook_size.py

Measured in one run, side by side:

- the display bundle that loads BokehJS into the page, once per kernel and saved in that
  cell's output: ``bokeh.io.output_notebook(resources=INLINE, hide_banner=True)`` (what the
  extension displayed before: the library twice, as JavaScript and as Bokeh's load MIME
  type) against ``workbench_ext.bokehjs.bundle()`` (a loader that fetches the library from
  the Jupyter server);
- each committed tutorial (saved executed), and what it would weigh with the inline bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def inline_bundle() -> dict[str, Any]:
    """The bundle ``output_notebook(INLINE)`` publishes, captured instead of displayed."""
    import bokeh.io.notebook as notebook
    from bokeh.resources import INLINE

    captured: list[dict[str, Any]] = []
    publish = notebook.publish_display_data
    notebook.publish_display_data = lambda data, metadata=None, **_: captured.append(data)
    try:
        notebook.load_notebook(resources=INLINE, hide_banner=True)
    finally:
        notebook.publish_display_data = publish
    (bundle,) = captured
    return bundle


def main() -> None:
    from workbench_ext import bokehjs

    before = len(json.dumps(inline_bundle()))
    now = len(json.dumps(bokehjs.bundle()))
    print(f"{'BokehJS loader output':<28}{'inline (before)':>18}{'fetched (now)':>16}{'ratio':>10}")
    print(f"{'bytes in the saved cell':<28}{before:>18,}{now:>16,}{before / now:>9,.0f}x")
    print()
    print(f"{'tutorial (saved executed)':<28}{'with inline':>18}{'now':>16}{'under 500 KB':>14}")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        size = path.stat().st_size
        loaders = path.read_text().count(f'"{bokehjs.LOAD_MIME}"')  # one per kernel that drew a figure
        inline = size + loaders * (before - now)
        print(f"{path.name:<28}{inline:>18,}{size:>16,}{'yes' if size < 500_000 else 'NO':>14}")


if __name__ == "__main__":
    main()
