"""The model repository with Paddle wired in as its probe: ``workbench.ModelRepository``.

The model layer's :class:`~workbench.model.repository.ModelRepository` never imports
the runtime; publishing runs a model (to describe its outputs, prove its runtime
settings or tune them) through the probe it is given. This is the repository the
public API and notebooks use: the same class with :class:`PaddleProbe` as its default
probe, so ``ModelRepository(root).publish(..., sample=...)`` runs the sample on Paddle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.model import repository
from workbench.runtime.paddle import PaddleProbe

if TYPE_CHECKING:
    from workbench._types import StrPath
    from workbench.model.probe import ModelProbe


class ModelRepository(repository.ModelRepository):
    """A :class:`workbench.model.repository.ModelRepository` probing models with Paddle."""

    def __init__(
        self, root: StrPath, *, verify_key: StrPath | None = None, probe: ModelProbe | None = None
    ) -> None:
        super().__init__(root, verify_key=verify_key, probe=probe or PaddleProbe())
