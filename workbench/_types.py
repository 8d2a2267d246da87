"""Type aliases shared across the workbench."""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

StrPath: TypeAlias = "str | PathLike[str]"
Array: TypeAlias = "npt.NDArray[np.generic]"
Tensors: TypeAlias = "dict[str, Array]"
TensorsIn: TypeAlias = "Mapping[str, Array]"
Color: TypeAlias = Literal["blue", "green"]
JSON: TypeAlias = "dict[str, object]"
