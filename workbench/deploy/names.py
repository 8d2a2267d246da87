"""Names shared across the deploy layer: the two colours and deployment names."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench._types import Color

COLORS: tuple[Color, Color] = ("blue", "green")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


def check_deployment_name(name: str) -> str:
    """Return ``name`` if it is a valid deployment name (DNS-label-like), else raise ValueError."""
    if not _NAME.match(name):
        raise ValueError(
            f"invalid deployment name {name!r}: use 1-40 lowercase letters, digits and '-', "
            "starting with a letter"
        )
    return name
