"""Traffic segments: what part of the traffic a request belongs to, with a bounded number of values.

A segment is read from a request header (``header:x-tenant``, or a bare ``x-tenant``) or
from the Open Inference Protocol request's ``parameters`` (``param:tenant``).
``workbench serve --segment-by header:x-tenant`` counts every inference request per
segment as well as in total (:mod:`workbench.serving.metrics`), so that a canary analysis
can judge each segment on its own (:mod:`workbench.deploy.rollout.segments`).

Label values are bounded: each instance keeps the first ``max_segments`` distinct values
of a key it sees as their own label, and pools every later value as ``other``; a request
without the header or parameter is counted as ``none``. Values longer than
:data:`MAX_VALUE_LENGTH` characters, or the reserved words themselves, are pooled as
``other`` too. The bound holds for the instance's lifetime (values are never evicted, so a
series never changes meaning under a scraper's feet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["MAX_VALUE_LENGTH", "MISSING", "OTHER", "SegmentBook", "SegmentKey", "segment_values"]

OTHER = "other"  # values past the bound, pooled
MISSING = "none"  # requests without the header or parameter
MAX_VALUE_LENGTH = 64
DEFAULT_MAX_SEGMENTS = 16

Kind = Literal["header", "param"]


@dataclass(frozen=True)
class SegmentKey:
    """Where a request's segment is read: a header (lower case) or a request parameter."""

    kind: Kind
    name: str

    def __post_init__(self) -> None:
        if self.kind not in ("header", "param"):
            raise ValueError(f"a segment is read from a header or a param, not {self.kind!r}")
        if not self.name or any(c.isspace() or c in "=:," for c in self.name):
            raise ValueError(f"not a header or parameter name: {self.name!r}")

    @classmethod
    def parse(cls, text: str) -> SegmentKey:
        """``header:x-tenant``, ``x-tenant`` (a header) or ``param:tenant``."""
        kind, sep, name = text.strip().partition(":")
        if not sep:
            kind, name = "header", kind
        kind = kind.strip().lower()
        if kind not in ("header", "param"):
            raise ValueError(
                f"a segment is header:NAME or param:NAME, not {text!r}")
        name = name.strip()
        return cls(kind, name.lower() if kind == "header" else name)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def describe(self, value: str) -> str:
        """How a segment is named to people: ``x-tenant=b``."""
        return f"{self.name}={value}"


class SegmentBook:
    """The label of each value of one key, at most ``limit`` values of their own."""

    __slots__ = ("_known", "limit")

    def __init__(self, limit: int = DEFAULT_MAX_SEGMENTS) -> None:
        if limit < 1:
            raise ValueError(f"the segment bound must be at least 1, not {limit}")
        self.limit = limit
        self._known: set[str] = set()

    def label(self, value: str | None) -> str:
        """``value`` itself while there is room for it, else ``other``; ``none`` when absent."""
        if value is None or value == "":
            return MISSING
        if value in self._known:
            return value
        if len(self._known) >= self.limit or len(value) > MAX_VALUE_LENGTH or value in (
                OTHER, MISSING):
            return OTHER
        self._known.add(value)
        return value

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self._known)


def segment_values(
    keys: Iterable[SegmentKey], headers: Iterable[tuple[bytes, bytes]],
    parameters: Mapping[str, object] | None,
) -> dict[SegmentKey, str | None]:
    """Each key's raw value in one request (None when absent; a non-scalar parameter is
    pooled as ``other``)."""
    wanted = {key.name.encode("latin-1"): key for key in keys if key.kind == "header"}
    found: dict[SegmentKey, str | None] = {}
    if wanted:
        for name, value in headers:
            key = wanted.get(name)
            if key is not None and key not in found:
                found[key] = value.decode("latin-1").strip()
    for key in keys:
        if key.kind == "param":
            raw = (parameters or {}).get(key.name)
            if raw is None:
                found[key] = None
            elif isinstance(raw, bool):
                found[key] = str(raw).lower()
            elif isinstance(raw, str | int | float):
                found[key] = str(raw)
            else:
                found[key] = OTHER
        else:
            found.setdefault(key, None)
    return found
