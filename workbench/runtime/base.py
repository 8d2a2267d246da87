"""The predictor seam: one engine instance that runs named arrays to named arrays.

A predictor is not thread-safe; a loaded version keeps a pool of clones, one per
worker, which share the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from workbench._types import Tensors, TensorsIn


class Predictor(Protocol):
    """What the runtime needs from an inference engine."""

    def run(self, inputs: TensorsIn) -> Tensors:
        """Run one batch; inputs are already validated against the signature."""
        ...

    def clone(self) -> Predictor:
        """A new predictor sharing this one's weights, for another worker thread."""
        ...

    def release(self) -> None:
        """Free what this predictor holds (intermediate tensors, memory pools)."""
        ...
