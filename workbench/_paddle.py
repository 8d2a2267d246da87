"""Quiet, lazy access to Paddle.

Paddle prints glog lines and warnings on import and on every predictor it creates.
``quiet()`` sets the environment that silences them; it must run before the first
``import paddle``. ``import_paddle()`` does both and turns a missing package into
a MissingDependencyError naming the extra to install.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

from workbench.errors import MissingDependencyError

_QUIET_ENV = {
    "GLOG_minloglevel": "3",
    "GLOG_v": "0",
    "FLAGS_call_stack_level": "0",
    "FLAGS_print_ir": "0",
}


def quiet() -> None:
    """Silence Paddle's glog output (unless the user set these variables)."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)


def import_paddle() -> Any:
    """Import paddle quietly; raise MissingDependencyError if it is not installed."""
    quiet()
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = "paddle" not in sys.modules
            import paddle

            if first:
                # Paddle's C++ handlers for SIGTERM & co. print a "FatalError" and abort,
                # which pre-empts a server's graceful drain on SIGTERM.
                paddle.disable_signal_handler()
    except ModuleNotFoundError as exc:
        if exc.name != "paddle":
            raise
        raise MissingDependencyError("paddlepaddle", "cpu") from exc
    finally:
        # Paddle installs a handler on the root logger at import; the application's
        # logging configuration is not Paddle's to make.
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
    return paddle


def import_inference() -> Any:
    """Import ``paddle.inference`` quietly."""
    import_paddle()
    import paddle.inference

    return paddle.inference
