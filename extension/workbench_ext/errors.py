"""The extension's own error: a request the session cannot make sense of.

The magics turn it (and every :class:`workbench.WorkbenchError`) into IPython's
``UsageError``: the user sees one sentence, not a traceback.
"""

from __future__ import annotations


class SessionError(ValueError):
    """A request the session cannot make sense of (shown to the user as one sentence)."""
