"""BokehJS in the notebook page: fetched from the Jupyter server once per kernel, never inlined.

jupyter_bokeh's widget draws with the page's ``window.Bokeh``, which its Lab
extension does not ship. ``bokeh.io.output_notebook(INLINE)`` would put the whole
library (3.9 MB, twice: as JavaScript and as Bokeh's load MIME type) into a cell
output, and so into every saved notebook. Instead the kernel displays a loader of
about 1 KB: it fetches the library files from the Jupyter server, which serves
Bokeh's own static directory (``extension/jupyter_server_config.py`` adds it to
``ServerApp.extra_static_paths``; see :func:`static_dir`), and evaluates them
before any figure widget is drawn. Offline, no CDN. If the server does not serve
them, the output says how to fix it instead of an empty figure.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from workbench_ext._ipython import in_kernel, publish_display_data

#: Bokeh's load MIME type: jupyter_bokeh's Lab renderer runs it as a script.
LOAD_MIME = "application/vnd.bokehjs_load.v0+json"
#: The library files figures need, under the server's ``static/`` (no MathJax: no LaTeX labels).
FILES = ("js/bokeh.min.js", "js/bokeh-gl.min.js", "js/bokeh-widgets.min.js", "js/bokeh-tables.min.js")

_LOADER = """(function () {
  var version = %(version)s, files = %(files)s;
  if (window.Bokeh && window.Bokeh.version === version) { return; }
  var base = "/", config = document.getElementById("jupyter-config-data");
  if (config) { try { base = JSON.parse(config.textContent).baseUrl || "/"; } catch (e) {} }
  var here = document.currentScript;
  for (var i = 0; i < files.length; i++) {
    var url = base + "static/" + files[i] + "?v=" + version, request = new XMLHttpRequest();
    request.open("GET", url, false);  // synchronous: figures drawn next need window.Bokeh
    request.send();
    if (request.status !== 200) {
      var text = "BokehJS " + version + " is not served at " + url + " (HTTP " + request.status +
        "): start JupyterLab with `workbench lab`, or add Bokeh's static directory to " +
        "ServerApp.extra_static_paths (see the workbench's jupyter_server_config.py).";
      console.error(text);
      if (here && here.parentNode) {
        var note = document.createElement("pre");
        note.textContent = text;
        here.parentNode.appendChild(note);
      }
      return;
    }
    (0, eval)(request.responseText + "\\n//# sourceURL=" + url);
  }
})();
"""


def static_dir() -> Path | None:
    """Bokeh's static directory (what a Bokeh server serves under ``/static``), found without importing it."""
    spec = importlib.util.find_spec("bokeh")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "server" / "static"
    return path if path.is_dir() else None


def loader_js(version: str) -> str:
    """The loader script for BokehJS ``version`` (about 1 KB)."""
    return _LOADER % {"version": json.dumps(version), "files": json.dumps(list(FILES))}


def bundle() -> dict[str, Any]:
    """The display bundle: the loader for Lab (Bokeh's load MIME type) and classic Jupyter."""
    import bokeh

    script = loader_js(bokeh.__version__)
    return {LOAD_MIME: script, "application/javascript": script}


_LOADED = False


def ensure_loaded() -> None:
    """Display the loader once per kernel; outside a kernel (terminal IPython, tests) nothing."""
    global _LOADED
    if _LOADED:
        return
    if not in_kernel():
        return
    publish_display_data(bundle())
    _LOADED = True
