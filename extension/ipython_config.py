# Configuration of terminal IPython (e.g. over SSH) for the paddle workbench.
#
# Auto-loads the workbench extension, so `ipython` in an SSH session has the same
# %paddle magics as a notebook. Kernels read this file too; loading the
# extension twice is harmless.

c = get_config()  # type: ignore[name-defined]  # noqa: F821

c.InteractiveShellApp.extensions.append("workbench_ext")
