"""The serving instance: the Open Inference Protocol (KServe v2 REST) over a version hub.

``create_app(hub, settings=ServingSettings(...))`` builds the ASGI app;
``workbench serve`` (:mod:`workbench.serving.server`) runs it under uvicorn.
The names below are imported on first use, so a light module of this package (the
segment keys the deploy layer reads) loads without numpy, Starlette or Paddle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench._lazy import lazy_attributes

if TYPE_CHECKING:
    from workbench.serving.app import create_app
    from workbench.serving.batching import BatchingConfig
    from workbench.serving.service import ServingSettings

__all__ = ["BatchingConfig", "ServingSettings", "create_app"]

_WHERE = {
    "BatchingConfig": "batching",
    "ServingSettings": "service",
    "create_app": "app",
}

__getattr__ = lazy_attributes(__name__, _WHERE)
