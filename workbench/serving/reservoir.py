"""A bounded, uniform sample of the inputs this instance was asked to infer on.

A canary is best judged on the inputs real users send. :class:`Reservoir` keeps a
uniform random sample of the request rows seen so far (the first ``size`` rows fill
it; row ``n`` then holds a random slot with probability ``size / n``), so it stays a few
hundred rows however long the instance runs. Once full, it draws how many rows to pass
over before the next one it keeps (Li's Algorithm L), so most requests cost one
comparison: no random draw, no copy. A row is one slice along the batch axis of every
input tensor (a request whose inputs disagree on their first dimension is kept whole, as one row).

An image request (a ``BYTES`` input of encoded images, :mod:`workbench.serving.images`)
offers one row per image, the image's bytes as the client sent them, once it has been
answered (an image that does not decode is not kept). The kept rows' bytes stay within
``max_bytes`` (:data:`DEFAULT_BYTES`): a row that would take them past it is passed
over (so with large images the sample holds fewer than ``size`` rows, and leans a
little towards the smaller images once the bound is reached).

``GET /v2/admin/reservoir`` (admin token) answers the sample as an Open Inference
Protocol request body, the rows stacked along the batch axis, ready to be replayed::

    {"model": "digits", "seen": 12345, "rows": 256,
     "inputs": [{"name": "x", "datatype": "FP32", "shape": [256, 64], "data": [...]}]}

Images come back as they are sent in JSON: ``{"name": "image", "datatype": "BYTES",
"shape": [n], "parameters": {"content_type": "base64"}, "data": ["iVBORw0KG...", ...]}``,
so the body can be posted to the model's ``infer`` as it is.

Per segment (:class:`SegmentedReservoir`): an instance serving with ``--segment-by
header:x-tenant`` also keeps a sample of each segment's rows, labelled as its metrics
label them (at most ``--max-segments`` values of their own, the rest pooled as ``other``,
requests without the header as ``none``: :mod:`workbench.serving.segments`), so that a
tenant with 1% of the traffic has a sample of its own, not the two or three rows a pooled
sample holds of it. Each segment's sample holds up to ``size`` rows and an equal share of
the byte bound. The pooled answer lists them (``"segments": {"header:x-tenant": {"b":
{"seen": 120, "rows": 120}, ...}}``); ``GET /v2/admin/reservoir?segment_by=header:x-tenant
&segment=b`` answers one segment's sample, in the same form.
"""

from __future__ import annotations

import base64
import math
import random
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.serving.admin import guarded
from workbench.serving.protocol import datatype_of
from workbench.serving.responses import json_response
from workbench.serving.segments import DEFAULT_MAX_SEGMENTS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from workbench.serving.segments import SegmentKey
    from workbench.serving.service import Service

__all__ = ["DEFAULT_BYTES", "DEFAULT_SIZE", "Reservoir", "SegmentedReservoir", "reservoir_route"]

DEFAULT_SIZE = 256
DEFAULT_BYTES = 64 << 20  # the kept rows' bytes, at most (images can be large)
Row = dict[str, np.ndarray[Any, Any]]


class Reservoir:
    """A uniform sample of request rows; ``size`` 0 keeps nothing. Used from the event loop."""

    def __init__(self, size: int = DEFAULT_SIZE, *, max_bytes: int = DEFAULT_BYTES,
                 seed: int | None = None) -> None:
        if size < 0:
            raise ValueError(f"the reservoir size must be >= 0, not {size}")
        if max_bytes < 0:
            raise ValueError(f"the reservoir's byte bound must be >= 0, not {max_bytes}")
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0  # held by the kept rows
        self.seen = 0
        self._rows: list[Row] = []
        self._random = random.Random(seed)
        self._weight = 1.0  # Algorithm L's running weight
        self._next = 0  # the number of the next row to keep once full

    def __len__(self) -> int:
        return len(self._rows)

    def offer(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Consider every row of one request's (validated) inputs."""
        if not self.size or not inputs:
            return
        arrays = list(inputs.items())
        counts = {array.shape[0] if array.ndim else -1 for _, array in arrays}
        rows = counts.pop() if len(counts) == 1 else -1
        whole = rows < 0  # inputs that do not share a batch axis: the request is one row
        first = self.seen + 1  # the number of this request's first row, counting from 1
        self.seen += 1 if whole else rows
        if len(self._rows) == self.size and self._next > self.seen:
            return  # the common case once full: no row of this request is kept
        for number in range(first, self.seen + 1):
            if len(self._rows) < self.size:
                slot = len(self._rows)
            elif number == self._next:
                slot = self._random.randrange(self.size)
            else:
                continue
            index = number - first
            self._keep(slot, {name: np.array(array) for name, array in arrays} if whole else
                       {name: np.array(array[index : index + 1]) for name, array in arrays})
            if len(self._rows) == self.size:
                self._skip(number)

    def offer_images(self, name: str, images: Sequence[bytes]) -> None:
        """Consider one answered image request: one row per encoded image."""
        if not self.size or not images:
            return
        array = np.empty(len(images), dtype=np.object_)
        array[:] = [bytes(image) for image in images]
        self.offer({name: array})

    def _skip(self, number: int) -> None:
        """Algorithm L: draw the number of the next row to keep after row ``number``."""
        draw = self._random.random
        self._weight *= math.exp(math.log(1.0 - draw()) / self.size)
        if self._weight >= 1.0:
            self._next = number + 1
            return
        self._next = number + 1 + int(math.log(1.0 - draw()) / math.log1p(-self._weight))

    def _keep(self, slot: int, row: Row) -> None:
        size = _nbytes(row)
        freed = _nbytes(self._rows[slot]) if slot < len(self._rows) else 0
        if self.bytes - freed + size > self.max_bytes:
            return  # over the byte bound: passed over
        self.bytes += size - freed
        if slot == len(self._rows):
            self._rows.append(row)
        else:
            self._rows[slot] = row

    def sample(self) -> dict[str, np.ndarray[Any, Any]]:
        """The kept rows stacked into one batch per input (rows shaped unlike the first left out)."""
        if not self._rows:
            return {}
        first = self._rows[0]
        same = [row for row in self._rows if row.keys() == first.keys() and all(
            row[name].shape[1:] == first[name].shape[1:] and row[name].dtype == first[name].dtype
            for name in first
        )]
        return {name: np.concatenate([row[name] for row in same], axis=0) for name in first}

    def to_json(self, model: str) -> dict[str, Any]:
        """The sample as an inference request body, with how many rows were seen."""
        stacked = self.sample()
        rows = next(iter(stacked.values())).shape[0] if stacked else 0
        return {
            "model": model,
            "seen": self.seen,
            "rows": rows,
            "inputs": [_tensor(name, array) for name, array in stacked.items()],
        }


def _tensor(name: str, array: np.ndarray[Any, Any]) -> dict[str, Any]:
    if array.dtype.kind == "O":  # encoded images: base64 in JSON, as clients send them
        return {"name": name, "datatype": "BYTES", "shape": list(array.shape),
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(item).decode("ascii") for item in array.ravel().tolist()]}
    return {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape),
            "data": array.ravel().tolist()}


def _nbytes(row: Row) -> int:
    return sum(sum(len(item) for item in array.ravel().tolist()) if array.dtype.kind == "O"
               else array.nbytes for array in row.values())


class SegmentedReservoir:
    """The pooled sample, and a sample of each segment of each of ``keys``. ``label``
    names a segment as the instance's metrics do (the same bounded book, so the segments
    here are the segments there)."""

    def __init__(self, size: int = DEFAULT_SIZE, *, keys: Sequence[SegmentKey] = (),
                 label: Callable[[SegmentKey, str | None], str] | None = None,
                 limit: int = DEFAULT_MAX_SEGMENTS, max_bytes: int = DEFAULT_BYTES) -> None:
        self.pooled = Reservoir(size, max_bytes=max_bytes)
        self.keys = tuple(keys) if label is not None else ()
        self._label = label
        self._size = size
        # every key's segments together stay within the byte bound: an equal share each
        self._share = max_bytes // max(len(self.keys) * (limit + 2), 1)
        self._segments: dict[tuple[SegmentKey, str], Reservoir] = {}

    def offer(self, inputs: Mapping[str, np.ndarray[Any, Any]],
              segments: Mapping[SegmentKey, str | None] | None = None) -> None:
        """Consider one request's rows for the pooled sample and its segments' samples."""
        self.pooled.offer(inputs)
        for reservoir in self._of(segments):
            reservoir.offer(inputs)

    def offer_images(self, name: str, images: Sequence[bytes],
                     segments: Mapping[SegmentKey, str | None] | None = None) -> None:
        self.pooled.offer_images(name, images)
        for reservoir in self._of(segments):
            reservoir.offer_images(name, images)

    def _of(self, segments: Mapping[SegmentKey, str | None] | None) -> list[Reservoir]:
        if not self.keys or not self._size or self._label is None:
            return []
        found = []
        for key in self.keys:
            index = (key, self._label(key, (segments or {}).get(key)))
            reservoir = self._segments.get(index)
            if reservoir is None:
                reservoir = self._segments[index] = Reservoir(self._size, max_bytes=self._share)
            found.append(reservoir)
        return found

    def listing(self) -> dict[str, dict[str, dict[str, int]]]:
        """Segment key -> segment -> rows seen and kept."""
        listed: dict[str, dict[str, dict[str, int]]] = {str(key): {} for key in self.keys}
        for (key, segment), reservoir in sorted(self._segments.items(),
                                                key=lambda item: (str(item[0][0]), item[0][1])):
            listed[str(key)][segment] = {"seen": reservoir.seen, "rows": len(reservoir)}
        return listed

    def to_json(self, model: str, segment_by: str | None = None,
                segment: str | None = None) -> dict[str, Any]:
        """The pooled sample (with the segments' listing), or one segment's (ValueError
        for a key this instance does not sample by)."""
        if segment_by is None:
            body = self.pooled.to_json(model)
            if self.keys:
                body["segments"] = self.listing()
            return body
        from workbench.serving.segments import SegmentKey

        key = SegmentKey.parse(segment_by)
        if key not in self.keys:
            counted = ", ".join(str(k) for k in self.keys) or "none"
            raise ValueError(f"this instance keeps no sample per segment of {key} "
                             f"(it serves with --segment-by: {counted})")
        reservoir = self._segments.get((key, segment or ""))
        body = (reservoir or Reservoir(0)).to_json(model)
        body.update(segment_by=str(key), segment=segment)
        return body


def reservoir_route(service: Service, reservoir: SegmentedReservoir) -> Route:
    """``GET /v2/admin/reservoir[?segment_by=KEY&segment=VALUE]`` behind the admin token."""
    from starlette.routing import Route

    async def handler(request: Request) -> Response:
        query = request.query_params
        segment_by = query.get("segment_by")
        if segment_by is not None and "segment" not in query:
            return json_response({"error": "segment_by needs segment= as well"}, status=400)
        try:
            return json_response(reservoir.to_json(service.model, segment_by,
                                                   query.get("segment")))
        except ValueError as exc:
            return json_response({"error": str(exc)}, status=400)

    return Route("/v2/admin/reservoir", guarded(service, handler), methods=["GET"])
