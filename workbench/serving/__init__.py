"""The serving instance: the Open Inference Protocol (KServe v2 REST) over a version hub.

``create_app(hub, settings=ServingSettings(...))`` builds the ASGI app;
``workbench serve`` (:mod:`workbench.serving.server`) runs it under uvicorn.
Starlette, uvicorn and Paddle are imported by the modules that use them.
"""

from __future__ import annotations

from workbench.serving.batching import BatchingConfig
from workbench.serving.service import ServingSettings

__all__ = ["BatchingConfig", "ServingSettings", "create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from workbench.serving.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
