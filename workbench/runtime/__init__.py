"""In-memory side of the model layer: devices, Paddle predictors, loaded versions, the hub.

The names below are the layer's front for the faces, imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench._lazy import lazy_attributes

if TYPE_CHECKING:
    from workbench.runtime.device import available_devices
    from workbench.runtime.latency import PERCENTILES, percentiles
    from workbench.runtime.scoring import character_error_rate, exact_match

__all__ = ["PERCENTILES", "available_devices", "character_error_rate", "exact_match", "percentiles"]

_WHERE = {
    "PERCENTILES": "latency",
    "available_devices": "device",
    "character_error_rate": "scoring",
    "exact_match": "scoring",
    "percentiles": "latency",
}

__getattr__ = lazy_attributes(__name__, _WHERE)
