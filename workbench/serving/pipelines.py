"""Image in, lines out: a pipeline version served as one model.

A pipeline version (:mod:`workbench.model.pipeline`) is loaded by the hub like any
version (:class:`~workbench.runtime.pipeline.LoadedPipeline`: its det, optional cls and
rec stage versions loaded with their own runtime settings). A request sends it images
exactly as it sends them to a served detector or recogniser (:mod:`.images`): **one
``BYTES`` input**, one encoded image per element, JSON base64 with
``"parameters": {"content_type": "base64"}`` or Triton's binary extension, on the same
``/v2/models/{m}[/versions/{v}]/infer`` paths. Each image runs through the OCR chain of
the stages' codecs (:class:`~workbench.codecs.ocr.OcrChain`: detect, crop, turn crops the
classifier reads as upside down, recognise), the same chain a notebook runs in-process,
so both read the same lines.

The answer holds every line found, image after image, each image's lines in reading
order (top to bottom, then left to right):

- ``text`` (BYTES ``[K]``, UTF-8) and ``score`` (FP32 ``[K]``): what the recogniser read;
- ``boxes`` (FP32 ``[K, 4, 2]``): each line's corners in source pixels, clockwise from the
  top-left, and ``box_score`` (FP32 ``[K]``): the detector's score for it;
- ``image_index`` (INT32 ``[K]``): the image each line belongs to.

A request may name some of them in ``outputs``. Raw tensors are refused with 400 (a
pipeline has no tensor signature), as are bytes that are not an image.

The stages are scheduled as Triton schedules an ensemble's composing models: a request
holds no thread while a stage computes. Its CPU steps (decoding, each codec's pre- and
post-processing, crops) run on the instance's inference threads between the stages'
model calls (:meth:`~workbench.codecs.ocr.OcrChain.steps`), and each model call is
queued to its stage version's own runner (:meth:`.Service.stage_runner`, the dynamic
batcher of :mod:`.batching`), so one request's detection runs while another's
recognition does. A request alone in its chain calls its stages straight from its
inference thread, as the in-process chain does, and saves the hops to the event loop and
back that a busy machine makes slow; as soon as another request is in a chain, stage
calls go through the queues again. A stage version named by several loaded pipelines is loaded once
(:mod:`workbench.runtime.stages`) and has one runner for all of them. With batching on, a
stage's runner merges same-shape batches of concurrent requests (pages of one size to the
detector, up to ``max_batch_size`` images; crop batches of one width to the classifier and
the recogniser, up to the chain's ``rec_batch`` crops). Detection and orientation answer
each row exactly as they do alone (convolutions: checked bit for bit on the v4 and v5
exports), so boxes and turns never depend on a neighbour; the recogniser's attention
layers may differ by float rounding in a merged batch (about 1e-6 in the v5 scores, the
texts the same). With ``--no-batching`` every batch runs as its request formed it, and
the lines are bit for bit those the chain reads in-process. Each stage version's counts and
batch sizes are in ``GET /v2/models/stats`` under its own model name, as Triton lists
an ensemble's composing models.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import numpy as np

from workbench.codecs.image import DecodeImage
from workbench.codecs.ocr import OcrChain, StageCall
from workbench.errors import ImageDecodeError, WorkbenchError
from workbench.serving.batching import ClientGone, RunResult
from workbench.serving.images import build_codec
from workbench.serving.protocol import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from workbench._types import Array, Tensors
    from workbench.codecs.ocr import TextLine
    from workbench.runtime.loaded import LoadedVersion
    from workbench.runtime.pipeline import LoadedPipeline
    from workbench.serving.batching import Runner
    from workbench.serving.protocol import InferRequest
    from workbench.serving.service import Service
    from workbench.serving.statistics import VersionStatistics

    #: :meth:`OcrChain.steps`: yields stage calls, is sent their outputs, returns the lines
    Steps: TypeAlias = Generator[StageCall, list[Array], list[list[TextLine]]]

#: The outputs of a pipeline, in order, with their datatype and shape.
OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "text": ("BYTES", [-1]),
    "score": ("FP32", [-1]),
    "boxes": ("FP32", [-1, 4, 2]),
    "box_score": ("FP32", [-1]),
    "image_index": ("INT32", [-1]),
}


def build_chain(loaded: LoadedPipeline) -> OcrChain:
    """The OCR chain of the pipeline's stage codecs (each from its stage's manifest)."""
    codecs = {}
    for role, stage in loaded.stages.items():
        codec = build_codec(stage)
        if codec is None:
            raise WorkbenchError(
                f"{loaded.model}:{loaded.version}: its {role} stage {stage.model}:{stage.version} "
                "has no codec (no inference.yml pre/post-processing), so it cannot read images"
            )
        codecs[role] = codec
    return OcrChain(codecs["det"], codecs["rec"], codecs.get("cls"))


def decode_images(images: Sequence[bytes]) -> list[Array]:
    """The request's images as HWC arrays; ProtocolError (400) for bytes that are not one."""
    decode = DecodeImage()
    decoded: list[Array] = []
    for index, image in enumerate(images):
        try:
            decoded.append(decode({"image": image})["image"])
        except ImageDecodeError as exc:
            raise ProtocolError(f"image {index}: {exc}") from exc
    return decoded


def advance(steps: Steps, outputs: list[Array] | None) -> StageCall | list[list[TextLine]]:
    """The chain's next stage call after ``outputs`` (None to start), or its lines."""
    try:
        return steps.send(outputs)  # type: ignore[arg-type]  # None starts the generator
    except StopIteration as done:
        return cast("list[list[TextLine]]", done.value)


def to_tensors(lines: Sequence[Sequence[TextLine]]) -> Tensors:
    """Lines as Open Inference Protocol output tensors (see the module docstring)."""
    flat = [(index, line) for index, found in enumerate(lines) for line in found]
    text = np.empty(len(flat), dtype=np.object_)
    text[:] = [line.text.encode("utf-8") for _, line in flat]
    boxes = [np.asarray(line.box, dtype=np.float32) for _, line in flat]
    return {
        "text": text,
        "score": np.array([line.score for _, line in flat], dtype=np.float32),
        "boxes": np.stack(boxes) if boxes else np.zeros((0, 4, 2), np.float32),
        "box_score": np.array([line.box_score for _, line in flat], dtype=np.float32),
        "image_index": np.array([index for index, _ in flat], dtype=np.int32),
    }


def metadata(loaded: LoadedPipeline) -> dict[str, Any]:
    """How to call the pipeline, for its model metadata (``parameters.pipeline``)."""
    return {
        "task": "ocr",
        "stages": [{"role": s.role, "model": s.model, "version": s.version, "task": s.task}
                   for s in loaded.pipeline.stages],
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1],
                    "parameters": {"content_type": "base64 in JSON; raw in binary"}}],
        "outputs": [{"name": name, "datatype": datatype, "shape": shape}
                    for name, (datatype, shape) in OUTPUTS.items()],
    }


class _Stage:
    """One stage version of a request's chain: its batches through the stage's runner
    (:meth:`submit`, on the loop) or straight to the stage (:meth:`call`, on an inference
    thread); either way counted in the stage's statistics."""

    def __init__(self, stage: LoadedVersion, runner: Runner, stats: VersionStatistics,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.stage, self.runner, self.stats, self.loop = stage, runner, stats, loop
        self.name, self.first = stage.inputs[0].name, stage.outputs[0].name

    async def submit(self, batch: Array) -> Array:
        queued = time.perf_counter()
        try:
            result = await self.runner.submit({self.name: batch})
        except BaseException:
            self.stats.failed(time.perf_counter() - queued)
            raise
        self.stats.succeeded(len(batch), time.perf_counter() - queued, result.queue_seconds, 0.0,
                             result.compute_seconds, 0.0)
        return result.outputs[self.first]

    def call(self, batch: Array) -> Array:
        started = time.perf_counter()
        try:
            output = self.stage.predict({self.name: batch}, validate=False)[self.first]
        except BaseException:
            self.loop.call_soon_threadsafe(self.stats.failed, time.perf_counter() - started)
            raise
        seconds = time.perf_counter() - started
        self.loop.call_soon_threadsafe(self._count, len(batch), seconds)
        return output

    def _count(self, rows: int, seconds: float) -> None:  # statistics change on the loop
        self.stats.executed(rows, seconds)
        self.stats.succeeded(rows, seconds, 0.0, 0.0, seconds, 0.0)


class PipelineInference:
    """Runs image requests through the OCR chain of the pipeline version that answers them,
    each stage's model calls through that stage's own queue (see the module docstring)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._chains: dict[int, tuple[LoadedPipeline, OcrChain]] = {}
        self._inflight = 0  # pipeline requests between their first and last step (on the loop)

    async def chain(self, loaded: LoadedPipeline) -> OcrChain:
        """The pipeline's chain (built once, off the loop)."""
        entry = self._chains.get(id(loaded))
        if entry is not None and entry[0] is loaded:
            return entry[1]
        chain = await asyncio.to_thread(build_chain, loaded)
        if len(self._chains) > 16:
            self._chains.clear()
        self._chains[id(loaded)] = (loaded, chain)
        return chain

    def _stage(self, stage: LoadedVersion, rows: int) -> _Stage:
        return _Stage(stage, self.service.stage_runner(stage, rows),
                      self.service.stage_statistics(stage), asyncio.get_running_loop())

    def _alone(self, steps: Steps, call: StageCall | list[list[TextLine]],
               stages: dict[str, _Stage]) -> StageCall | list[list[TextLine]]:
        """On an inference thread: while this request is the only one in a chain, its stage
        calls go straight to the stage versions from this thread, as the in-process chain
        makes them (no hop to the event loop and back per stage, which a loaded machine
        makes costly); once another request is in a chain, the stage call goes back to the
        loop and through the stage's queue, so the requests overlap and batch."""
        while isinstance(call, StageCall) and self._inflight == 1:
            stage = stages[call.role]
            call = advance(steps, [stage.call(batch) for batch in call.batches])
        return call

    def _rows(self, chain: OcrChain, role: str) -> int:
        """The rows a stage's batch may hold when it merges concurrent requests' batches:
        the instance's ``max_batch_size`` images for the detector, the chain's
        ``rec_batch`` crops for the others; 1 (never merged) with batching off."""
        batching = self.service.settings.batching
        if not batching.enabled:
            return 1
        return batching.max_batch_size if role == "det" else chain.rec_batch

    async def infer(self, loaded: LoadedPipeline, request: InferRequest, images: Sequence[bytes],
                    gone: Callable[[], bool] | None = None) -> RunResult:
        """The lines of the request's ``images`` (its :func:`~.images.encoded_images`)."""
        label = f"{loaded.model}:{loaded.version}"
        limit = self.service.settings.batching.max_batch_size
        if len(images) > limit:
            raise ProtocolError(
                f"the request has {len(images)} images; {label} accepts at most {limit} per request "
                "(max_batch_size)"
            )
        for want in request.outputs or ():
            if want.name not in OUTPUTS:
                raise ProtocolError(f"unknown output {want.name!r}; {label} answers with {list(OUTPUTS)}")
        chain = await self.chain(loaded)
        stages = dict(loaded.stages)
        if "det" not in stages or "rec" not in stages:  # the hub unloaded it; never while leased
            raise WorkbenchError(f"{label} is not loaded")
        runners = {role: self._stage(stage, self._rows(chain, role)) for role, stage in stages.items()}
        queued = time.perf_counter()

        def begin() -> tuple[float, Steps, StageCall | list[list[TextLine]]]:
            started = time.perf_counter()
            if gone is not None and gone():
                raise ClientGone(f"{label}: the client left before its request ran")
            steps = chain.steps(decode_images(images), classify="cls" in stages)
            return started, steps, self._alone(steps, advance(steps, None), runners)

        def resume(steps: Steps, outputs: list[Array]) -> StageCall | list[list[TextLine]]:
            return self._alone(steps, advance(steps, outputs), runners)

        self._inflight += 1
        try:
            started, steps, call = await self.service.compute(begin)
            try:
                while isinstance(call, StageCall):
                    stage = runners[call.role]
                    outputs = await asyncio.gather(*(stage.submit(batch) for batch in call.batches))
                    call = await self.service.compute(functools.partial(resume, steps, list(outputs)))
            except BaseException:
                steps.close()
                raise
        except BaseException:
            loaded.counted(failed=True)
            raise
        finally:
            self._inflight -= 1
        seconds = time.perf_counter() - started
        loaded.counted()
        self.service.metrics.version(loaded.version_label).inference.observe(seconds)
        return RunResult(to_tensors(call), queue_seconds=started - queued,
                         compute_seconds=seconds, batch_size=len(images))
