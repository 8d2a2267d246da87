"""A codec: the pre- and post-processing of one exported model, built from its ``codec`` dict.

The dict is what the manifest records from a PaddleX export's ``inference.yml``::

    {"preprocess": [<PreProcess.transform_ops, verbatim>],
     "postprocess": {<PostProcess, verbatim: name, parameters, character_dict>}}

:class:`Codec` turns images (encoded bytes or HWC uint8 arrays) into the model's input
batches with per-image metadata (:meth:`Codec.prepare`, :meth:`Codec.batches`) and
the model's output back into task results (:meth:`Codec.decode`): text boxes
(``DBPostProcess``), text (``CTCLabelDecode``) or top-k labels (``Topk``).
:meth:`Codec.run` chains them around any ``predict`` function. An operation the
workbench does not implement fails the build with one sentence naming it and the
supported ones; training-only label encoders are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.codecs.cls import Classified, Topk
from workbench.codecs.det import DBPostProcess, TextBoxes
from workbench.codecs.image import OPERATIONS, DecodeImage, RecResizeImg, training_only
from workbench.codecs.rec import CTCLabelDecode, RecognizedText
from workbench.errors import CodecError
from workbench.model.task import Task

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from workbench._types import Array
    from workbench.codecs.image import Sample

Result = TextBoxes | RecognizedText | Classified

#: PostProcess name -> (class, task).
POSTPROCESSORS: dict[str, tuple[type, Task]] = {
    "DBPostProcess": (DBPostProcess, Task.TEXT_DETECTION),
    "CTCLabelDecode": (CTCLabelDecode, Task.TEXT_RECOGNITION),
    "Topk": (Topk, Task.CLASSIFICATION),
}
INFERENCE_YML = "inference.yml"


@dataclass(frozen=True)
class Prepared:
    """One image made ready for the model: its input tensor (no batch axis; for a text
    line, the decoded image, resized with its batch) and what the post-processor needs
    to know about it (``shape``: source size and resize ratios)."""

    tensor: Array
    meta: dict[str, Any]


class Codec:
    """Pre- and post-processing for one exported model."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if not isinstance(spec, dict):
            raise CodecError(
                f"a codec must be a mapping with preprocess and postprocess, not {type(spec).__name__}"
            )
        steps = spec.get("preprocess")
        if not isinstance(steps, list):
            raise CodecError("the codec's preprocess must be a list of operations")
        post = _postprocess(spec.get("postprocess"))
        self.operations: list[Callable[[Sample], Sample]] = []
        self.names: list[str] = []
        for step in steps:
            name, params = _step(step)
            if training_only(name):
                continue
            kind = OPERATIONS.get(name)
            if kind is None:
                raise CodecError(
                    f"unknown preprocess operation {name!r}; supported: {', '.join(sorted(OPERATIONS))} "
                    "(and training-only *LabelEncode operations, which are skipped)"
                )
            try:
                self.operations.append(kind(**params))
            except TypeError as exc:
                raise CodecError(f"{name}: {exc}") from exc
            self.names.append(name)
        if not self.names or self.names[0] != "DecodeImage":
            self.operations.insert(0, DecodeImage())
            self.names.insert(0, "DecodeImage")
        entry = POSTPROCESSORS.get(post["name"])
        if entry is None:
            raise CodecError(
                f"unknown postprocess {post['name']!r}; supported: {', '.join(sorted(POSTPROCESSORS))}"
            )
        kind, self.task = entry
        params = {k: v for k, v in post.items() if k != "name"}
        try:
            self.postprocess: Callable[[Array, Sequence[Mapping[str, Any]]], list[Any]] = kind(**params)
        except TypeError as exc:
            raise CodecError(f"{post['name']}: {exc}") from exc
        lines = [op for op in self.operations if isinstance(op, RecResizeImg)]
        self.line_resize: RecResizeImg | None = lines[-1] if lines else None

    def __repr__(self) -> str:
        return f"Codec({self.task.value}: {' -> '.join(self.names)} => {type(self.postprocess).__name__})"

    @classmethod
    def from_export(cls, directory: Path) -> Codec:
        """The codec of a PaddleX export directory (its ``inference.yml``)."""
        return cls(read_spec(directory / INFERENCE_YML))

    # -- the three steps ---------------------------------------------------------------

    def prepare(self, image: bytes | Array) -> Prepared:
        """Decode and transform one image; ImageDecodeError when it is not an image."""
        sample: Sample = {"image": image}
        for operation in self.operations:
            sample = operation(sample)
        tensor: Array = sample.pop("image")
        if self.line_resize is None:  # text lines are resized once their batch is known
            tensor = np.ascontiguousarray(tensor, dtype=np.float32)
        return Prepared(tensor, sample)

    def batches(self, prepared: Sequence[Prepared], max_rows: int = 0) -> list[tuple[list[int], Array]]:
        """Model input batches as ``(image indices, tensor)``: images whose tensors have one
        shape go together; text lines (``RecResizeImg``) go by width/height ratio, each
        batch as wide as its widest line. ``max_rows`` > 0 caps a batch's rows."""
        out: list[tuple[list[int], Array]] = []
        if self.line_resize is not None:
            resize = self.line_resize
            order = sorted(range(len(prepared)), key=lambda i: prepared[i].meta["wh_ratio"])
            step = max_rows if max_rows > 0 else max(1, len(order))
            for start in range(0, len(order), step):
                chunk = order[start : start + step]
                metas = [prepared[i].meta for i in chunk]
                width = resize.batch_width([m["wh_ratio"] for m in metas])
                tensors = [resize.resize(prepared[i].tensor, width) for i in chunk]
                out.append((chunk, np.stack(tensors)))
            return out
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, item in enumerate(prepared):
            groups.setdefault(item.tensor.shape, []).append(index)
        for indices in groups.values():
            step = max_rows if max_rows > 0 else len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                out.append((chunk, np.stack([prepared[i].tensor for i in chunk])))
        return out

    def decode(self, output: Array, metas: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Task results for one batch's first output tensor."""
        return self.postprocess(np.asarray(output), metas)

    def run(self, images: Sequence[bytes | Array], predict: Callable[[Array], Array],
            max_rows: int = 0) -> list[Any]:
        """``images`` through preprocessing, ``predict`` (batch in, first output out) and
        post-processing; results in the order of ``images``."""
        prepared, batches = self.plan(images, max_rows)
        return self.collect(prepared, batches, [predict(batch) for _, batch in batches])

    def plan(self, images: Sequence[bytes | Array], max_rows: int = 0
             ) -> tuple[list[Prepared], list[tuple[list[int], Array]]]:
        """:meth:`run`'s first half: the images prepared and their model input batches."""
        prepared = [self.prepare(image) for image in images]
        return prepared, self.batches(prepared, max_rows)

    def collect(self, prepared: Sequence[Prepared], batches: Sequence[tuple[list[int], Array]],
                outputs: Sequence[Array]) -> list[Any]:
        """:meth:`run`'s second half: each batch's model output decoded, results in the
        order of the images."""
        results: list[Any] = [None] * len(prepared)
        for (indices, _), output in zip(batches, outputs, strict=True):
            decoded = self.decode(output, [prepared[i].meta for i in indices])
            for index, result in zip(indices, decoded, strict=True):
                results[index] = result
        return results


def _postprocess(post: object) -> dict[str, Any]:
    """``{name: X, ...parameters}`` (PaddleOCR's form) or ``{X: {...parameters}}`` (PaddleClas')."""
    if isinstance(post, dict) and isinstance(post.get("name"), str):
        return post
    if isinstance(post, dict) and len(post) == 1:
        ((name, params),) = post.items()
        if isinstance(name, str) and isinstance(params, dict | None):
            return {"name": name, **(params or {})}
    raise CodecError(f"the codec's postprocess must be a mapping with a name, not {post!r}")


def _step(step: object) -> tuple[str, dict[str, Any]]:
    """``{Name: params-or-null}`` (PaddleX's form) or ``"Name"`` -> (name, params)."""
    if isinstance(step, str):
        return step, {}
    if isinstance(step, dict) and len(step) == 1:
        ((name, params),) = step.items()
        if params is None:
            params = {}
        if isinstance(name, str) and isinstance(params, dict):
            return name, params
    raise CodecError(f"a preprocess operation must be {{Name: parameters}}, not {step!r}")


def read_spec(path: Path) -> dict[str, Any]:
    """The codec dict of an ``inference.yml``: ``PreProcess.transform_ops`` and ``PostProcess``."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=loader)
    except (OSError, yaml.YAMLError) as exc:
        raise CodecError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise CodecError(f"{path} is not a PaddleX inference config (a mapping expected)")
    pre = doc.get("PreProcess") or {}
    post = doc.get("PostProcess")
    if not isinstance(pre, dict) or not isinstance(post, dict):
        raise CodecError(f"{path} has no PreProcess / PostProcess sections")
    return {"preprocess": list(pre.get("transform_ops") or []), "postprocess": dict(post)}
