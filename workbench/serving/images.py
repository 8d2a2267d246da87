"""Image in, task result out: inference through a version's codec.

A version published from a PaddleX export has a codec (its ``inference.yml`` pre/post-
processing, :mod:`workbench.codecs`). A client then need not normalise tensors or
decode probability maps itself: it sends the encoded images and gets the task's result.

How a client asks for it (Open Inference Protocol, KServe v2 REST): **one input of
datatype ``BYTES``**, one element per image (PNG, JPEG, BMP, TIFF or WebP), shape
``[N]`` or ``[N, 1]``; its name is free (``image`` by convention). A model's own inputs
are numeric tensors, so a ``BYTES`` input cannot be a raw-tensor request: the datatype
alone selects the codec, as a Triton ensemble whose first step decodes images declares a
``BYTES`` input. The images travel

- in JSON, base64-encoded, with ``"parameters": {"content_type": "base64"}`` on the input
  (MLServer's and KServe's convention for binary payloads), or
- in binary (Triton's binary tensor data extension: the ``Inference-Header-Content-Length``
  header, ``"parameters": {"binary_data_size": n}`` on the input, each element a 4-byte
  little-endian length and the image's bytes), which is what ``tritonclient.http``
  sends for a ``BYTES`` tensor.

The answer is the task's outputs (all, or those the request's ``outputs`` names, in JSON
or binary as asked):

- text recognition: ``text`` (BYTES ``[N]``, UTF-8) and ``score`` (FP32 ``[N]``);
- text detection: ``boxes`` (FP32 ``[K, 4, 2]``: corners in source pixels, clockwise from
  the top-left), ``scores`` (FP32 ``[K]``) and ``image_index`` (INT32 ``[K]``: the
  image each box belongs to);
- classification: ``labels`` (BYTES ``[N, k]``), ``scores`` (FP32 ``[N, k]``) and
  ``class_ids`` (INT64 ``[N, k]``), best first.

Images are decoded and transformed in a thread, run through the version's runner (so
they are batched with other requests and counted in its metrics like any rows), and
decoded back in a thread. Bytes that are not an image answer 400 naming the element.
The model metadata (``GET /v2/models/{m}``) of a version with a codec describes this
call under ``parameters.codec`` (task, image input, outputs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.codecs import Classified, Codec, RecognizedText, TextBoxes, read_spec
from workbench.codecs.codec import INFERENCE_YML
from workbench.errors import ImageDecodeError
from workbench.serving.batching import RunResult
from workbench.serving.protocol import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from workbench._types import Array, Tensors
    from workbench.runtime.loaded import LoadedVersion
    from workbench.serving.protocol import InferRequest
    from workbench.serving.service import Service

logger = logging.getLogger(__name__)

#: The outputs each task answers with.
OUTPUTS = {
    "text-recognition": ("text", "score"),
    "text-detection": ("boxes", "scores", "image_index"),
    "classification": ("labels", "scores", "class_ids"),
}


def wants_codec(request: InferRequest) -> bool:
    """A request with a ``BYTES`` input asks for the codec (encoded images)."""
    return any(array.dtype.kind == "O" for array in request.inputs.values())


class ImageInference:
    """Runs image requests through the codec of the version that answers them."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._codecs: dict[int, tuple[LoadedVersion, Codec | None]] = {}

    async def codec(self, loaded: LoadedVersion) -> Codec | None:
        """The version's codec (built once, off the loop); None when it has none."""
        entry = self._codecs.get(id(loaded))
        if entry is not None and entry[0] is loaded:
            return entry[1]
        codec = await asyncio.to_thread(build_codec, loaded)
        if len(self._codecs) > 64:
            self._codecs.clear()
        self._codecs[id(loaded)] = (loaded, codec)
        return codec

    async def infer(self, loaded: LoadedVersion, request: InferRequest,
                    gone: Callable[[], bool] | None = None) -> RunResult:
        """The task's outputs for the request's images."""
        images = request_images(request)
        codec = await self.codec(loaded)
        label = f"{loaded.model}:{loaded.version}"
        if codec is None:
            raise ProtocolError(
                f"{label} has no codec (no inference.yml pre/post-processing): send its input "
                "tensors, not encoded images"
            )
        limit = self.service.settings.batching.max_batch_size
        if len(images) > limit:
            raise ProtocolError(
                f"the request has {len(images)} images; {label} accepts at most {limit} per request "
                "(max_batch_size)"
            )
        names = OUTPUTS[codec.task.value]
        for want in request.outputs or ():
            if want.name not in names:
                raise ProtocolError(
                    f"unknown output {want.name!r}; {label} answers images with {list(names)}"
                )
        prepared = await asyncio.to_thread(_prepare, codec, images)
        input_name = loaded.inputs[0].name
        batches = codec.batches(prepared, limit)
        runs = await asyncio.gather(*(
            self.service.run(loaded, {input_name: tensor}, gone) for _, tensor in batches
        ))
        first = loaded.outputs[0].name
        started = time.perf_counter()
        results: list[Any] = [None] * len(prepared)
        for (indices, _), run in zip(batches, runs, strict=True):
            decoded = await asyncio.to_thread(
                codec.decode, run.outputs[first], [prepared[i].meta for i in indices]
            )
            for index, result in zip(indices, decoded, strict=True):
                results[index] = result
        outputs = to_tensors(codec.task.value, results)
        return RunResult(
            outputs,
            queue_seconds=max(run.queue_seconds for run in runs),
            compute_seconds=sum(run.compute_seconds for run in runs) + time.perf_counter() - started,
            batch_size=len(images),
        )


#: The datatype and shape of each output, per output name (K: boxes, k: top classes).
_SHAPES = {
    "text": ("BYTES", [-1]), "score": ("FP32", [-1]),
    "boxes": ("FP32", [-1, 4, 2]), "scores": ("FP32", [-1]), "image_index": ("INT32", [-1]),
    "labels": ("BYTES", [-1, -1]), "class_ids": ("INT64", [-1, -1]),
}


def metadata(loaded: LoadedVersion) -> dict[str, Any] | None:
    """How to call the version with images, for its model metadata (``parameters.codec``);
    None when its manifest records no codec."""
    manifest = loaded.manifest
    task = getattr(manifest, "task", None)
    names = OUTPUTS.get(getattr(task, "value", ""))
    if not getattr(manifest, "codec", None) or names is None:
        return None
    outputs = []
    for name in names:
        datatype, shape = _SHAPES[name]
        if name == "scores" and task is not None and task.value == "classification":
            shape = [-1, -1]
        outputs.append({"name": name, "datatype": datatype, "shape": shape})
    return {
        "task": task.value if task is not None else None,
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1],
                    "parameters": {"content_type": "base64 in JSON; raw in binary"}}],
        "outputs": outputs,
    }


def build_codec(loaded: LoadedVersion) -> Codec | None:
    """The codec the version's manifest records, else its export's ``inference.yml``."""
    spec = getattr(loaded.manifest, "codec", None)
    if not spec:
        path = loaded.path / INFERENCE_YML
        if not path.exists():
            return None
        spec = read_spec(path)
    codec = Codec(spec)
    logger.info("%s:%s serves images through %r", loaded.model, loaded.version, codec)
    return codec


def request_images(request: InferRequest) -> list[bytes]:
    if len(request.inputs) != 1:
        raise ProtocolError(
            f"an image request has one BYTES input of encoded images, not {len(request.inputs)} inputs"
        )
    ((name, array),) = request.inputs.items()
    if array.dtype.kind != "O":
        raise ProtocolError(f"input {name!r} must be BYTES (encoded images)")
    if array.ndim == 0 or array.ndim > 2 or (array.ndim == 2 and array.shape[1] != 1):
        raise ProtocolError(
            f"input {name!r} has shape {list(array.shape)}: send images as shape [N] or [N, 1]"
        )
    if array.size == 0:
        raise ProtocolError(f"input {name!r} holds no image")
    return [bytes(item) for item in array.reshape(-1).tolist()]


def _prepare(codec: Codec, images: Sequence[bytes]) -> list[Any]:
    prepared = []
    for index, image in enumerate(images):
        try:
            prepared.append(codec.prepare(image))
        except ImageDecodeError as exc:
            raise ProtocolError(f"image {index}: {exc}") from exc
    return prepared


def to_tensors(task: str, results: Sequence[Any]) -> Tensors:
    """Task results as Open Inference Protocol output tensors (see the module docstring)."""
    if task == "text-recognition":
        read: Sequence[RecognizedText] = results
        return {
            "text": _strings([r.text for r in read]),
            "score": np.array([r.score for r in read], dtype=np.float32),
        }
    if task == "text-detection":
        found: Sequence[TextBoxes] = results
        boxes = [r.boxes for r in found]
        return {
            "boxes": np.concatenate(boxes).astype(np.float32) if boxes else np.zeros((0, 4, 2), np.float32),
            "scores": np.concatenate([r.scores for r in found]).astype(np.float32),
            "image_index": np.concatenate(
                [np.full(len(r.scores), i, dtype=np.int32) for i, r in enumerate(found)]
            ),
        }
    classified: Sequence[Classified] = results
    return {
        "labels": _strings([list(r.labels) for r in classified]),
        "scores": np.array([r.scores for r in classified], dtype=np.float32),
        "class_ids": np.array([r.class_ids for r in classified], dtype=np.int64),
    }


def _strings(values: Sequence[Any]) -> Array:
    """UTF-8 BYTES elements from (rows of) strings."""
    flat = [v for row in values for v in row] if values and isinstance(values[0], list) else list(values)
    array = np.empty(len(flat), dtype=np.object_)
    array[:] = [value.encode("utf-8") for value in flat]
    return array.reshape(np.shape(values)) if flat else array
