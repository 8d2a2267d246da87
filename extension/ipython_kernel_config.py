# Configuration of IPython kernels for the paddle workbench.
#
# Auto-loads the workbench extension (the %paddle magics, rich display of model
# versions, and the panels) in every kernel. The workbench image installs this
# file in the kernel's IPython profile; `workbench extension install` copies it
# into a user's profile (~/.ipython/profile_default by default), and `workbench
# lab` uses it in a private profile under $WORKBENCH_HOME.
# A kernel without the workbench installed logs one warning and starts anyway.

c = get_config()  # type: ignore[name-defined]  # noqa: F821

c.InteractiveShellApp.extensions.append("workbench_ext")
