"""The seam through which publishing runs a model: a small Protocol the runtime implements.

The model layer stores and describes versions; it does not load Paddle. When a
version is published without an output signature, or with ``--runtime auto``, the
repository needs to run the model once or a few times: it does so through a
:class:`ModelProbe` handed to it by the face (CLI, notebook, tests), whose Paddle
implementation lives in ``workbench.runtime.paddle`` (``PaddleProbe``). The arrow
points down: faces -> runtime -> model.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from workbench._types import Tensors, TensorsIn
    from workbench.model.formats import ModelFiles
    from workbench.model.runtime_settings import RuntimeSettings


@dataclass(frozen=True)
class Measurement:
    """The outputs of one input batch and the seconds each timed run took."""

    outputs: Tensors
    seconds: tuple[float, ...] = ()
    # What the predictor's config reported it does (e.g. {"onednn": False, "ir_optim": True}).
    in_effect: dict[str, Any] = field(default_factory=dict)

    @property
    def p50_ms(self) -> float | None:
        return statistics.median(self.seconds) * 1000 if self.seconds else None


class ModelProbe(Protocol):
    """Runs a model's files on the CPU with given settings (the runtime provides it)."""

    def measure(
        self, files: ModelFiles, inputs: TensorsIn, settings: RuntimeSettings, *, runs: int = 0
    ) -> Measurement:
        """Load ``files`` with ``settings``, run ``inputs`` once untimed, then ``runs`` timed
        times; raise a WorkbenchError (ModelLoadError, PredictError) with Paddle's sentence
        when the model cannot load or run."""
        ...
