# Configuration of IPython kernels for the paddle workbench.
#
# Auto-loads the workbench extension (the %paddle magics, rich display of model
# versions, and the panels) in every kernel. The workbench image installs this
# file in the kernel's IPython profile; `workbench extension install` copies it
# into a user's profile (~/.ipython/profile_default by default), and `workbench
# lab` uses it in a private profile under $WORKBENCH_HOME.
# A kernel without the workbench installed logs one warning and starts anyway.

import os

c = get_config()  # type: ignore[name-defined]  # noqa: F821

c.InteractiveShellApp.extensions.append("workbench_ext")

# Paddle's glog lines stay quiet in this process too (unless the user set these).
for _key, _value in (("GLOG_minloglevel", "3"), ("GLOG_v", "0"), ("FLAGS_call_stack_level", "0")):
    os.environ.setdefault(_key, _value)
