# Configuration of terminal IPython (e.g. over SSH) for the paddle workbench.
#
# Auto-loads the workbench extension, so `ipython` in an SSH session has the same
# %paddle magics as a notebook. Kernels read this file too; loading the
# extension twice is harmless.

import os

c = get_config()  # type: ignore[name-defined]  # noqa: F821

c.InteractiveShellApp.extensions.append("workbench_ext")

# Paddle's glog lines stay quiet in this process too (unless the user set these).
for _key, _value in (("GLOG_minloglevel", "3"), ("GLOG_v", "0"), ("FLAGS_call_stack_level", "0")):
    os.environ.setdefault(_key, _value)
