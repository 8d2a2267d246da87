"""The model repository with Paddle wired in as its probe: ``workbench.ModelRepository``.

The model layer's :class:`~workbench.model.repository.ModelRepository` never imports
the runtime; publishing runs a model (to describe its outputs, prove its runtime
settings or tune them) through the probe it is given, or the class's
``default_probe``. This module is the composition point the public API goes through
(``workbench.ModelRepository`` resolves here): importing it sets Paddle's CPU probe
as that default, so ``ModelRepository(root).publish(..., sample=...)`` from a notebook
runs the sample on Paddle. A probe passed to a repository or a call still wins.
"""

from __future__ import annotations

from workbench.model.repository import ModelRepository
from workbench.runtime.paddle import PaddleProbe

if ModelRepository.default_probe is None:
    ModelRepository.default_probe = PaddleProbe()

__all__ = ["ModelRepository"]
