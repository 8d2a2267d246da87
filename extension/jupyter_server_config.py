# Jupyter Server configuration of the paddle workbench (the Jupyter docker-stacks
# convention: the image copies it to /etc/jupyter/; `workbench lab` uses it from a
# private config directory under $WORKBENCH_HOME).
#
# Token authentication stays on: the token comes from $JUPYTER_TOKEN (Jupyter
# Server reads it itself) or is generated. Nothing here reaches the internet:
# no news feed, no update check, no extension manager that queries PyPI.
# Environment knobs: WORKBENCH_LAB_IP (default 127.0.0.1; the image sets 0.0.0.0),
# WORKBENCH_LAB_PORT (default 8888), WORKBENCH_NOTEBOOKS (the notebook directory).

import importlib.util
import os
from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # noqa: F821

c.ServerApp.ip = os.environ.get("WORKBENCH_LAB_IP", "127.0.0.1")
c.ServerApp.port = int(os.environ.get("WORKBENCH_LAB_PORT", "8888"))
c.ServerApp.port_retries = 0  # the printed URL must be the one that serves
c.ServerApp.open_browser = False
if os.environ.get("WORKBENCH_NOTEBOOKS"):
    c.ServerApp.root_dir = os.environ["WORKBENCH_NOTEBOOKS"]

# Offline by design: no news, no update checks, no PyPI-backed extension manager.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
c.LabApp.extension_manager = "readonly"

# Kernels that go quiet for a day are shut down; their GPU memory is freed.
c.MappingKernelManager.cull_idle_timeout = 24 * 3600
c.MappingKernelManager.cull_interval = 600
c.FileContentsManager.delete_to_trash = False

# BokehJS from this server, not inlined into notebooks: Bokeh's own static directory
# (js/bokeh.min.js, ...) under /static/, fetched once per kernel by workbench_ext.
_bokeh = importlib.util.find_spec("bokeh")
if _bokeh is not None and _bokeh.submodule_search_locations:
    _static = Path(next(iter(_bokeh.submodule_search_locations))) / "server" / "static"
    if _static.is_dir():
        c.ServerApp.extra_static_paths = [str(_static)]
