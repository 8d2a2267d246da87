"""OCR pipeline versions run side by side on the same images, and scored.

A pipeline version (``kind: pipeline``, e.g. ``ocr:5.0.0``) names its det, optional cls
and rec stage versions; each stage is loaded in the session (its own hub, never made
active by this) and the images go through :class:`workbench.codecs.OcrChain` with each
stage's codec from its manifest. Each version reads each image in turn, the versions
alternating image by image so load on a shared machine hits all alike.

Scores come from :mod:`workbench.runtime.scoring`: the character error rate of each
version's text (the lines of an image joined by newlines) against the ground truth when
given, else against the first version, with its bootstrap interval; the exact-match
share; and the median seconds per image.
"""

from __future__ import annotations

import difflib
import html
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.codecs import Codec
from workbench.codecs.ocr import OcrChain, TextLine
from workbench.runtime import character_error_rate, exact_match
from workbench_ext import ops
from workbench_ext.errors import SessionError
from workbench_ext.progress import run_with_progress

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pandas as pd

    from workbench_ext.state import Session

Array = np.ndarray[Any, Any]


@dataclass
class OcrResult:
    """Lines read per version and image, seconds per image, and the ground truth if any."""

    model: str
    versions: list[str]
    images: list[Array]
    lines: dict[str, list[list[TextLine]]]
    seconds: dict[str, list[float]]
    truth: list[str] | None = None
    _scores: pd.DataFrame | None = field(default=None, repr=False)

    def texts(self, version: str) -> list[str]:
        """Each image's text as ``version`` read it (:func:`page_text`)."""
        return [page_text(lines) for lines in self.lines[version]]

    @property
    def reference(self) -> str:
        return "ground truth" if self.truth is not None else self.versions[0]

    def reference_texts(self) -> list[str]:
        return list(self.truth) if self.truth is not None else self.texts(self.versions[0])

    def table(self) -> pd.DataFrame:
        """Per version: CER with its 95% interval, exact matches and latency, against the reference."""
        import pandas as pd

        if self._scores is not None:
            return self._scores
        reference = self.reference_texts()
        rows = []
        for version in self.versions:
            texts = self.texts(version)
            cer = character_error_rate(reference, texts)
            exact = exact_match(reference, texts)
            seconds = np.asarray(self.seconds[version]) * 1000
            low, high = cer.interval or (None, None)
            rows.append({
                "version": version,
                "lines": sum(len(lines) for lines in self.lines[version]),
                "cer": cer.value,
                "cer_low": low,
                "cer_high": high,
                "exact_match": exact.value,
                "p50_ms": float(np.median(seconds)),
                "max_ms": float(seconds.max()),
            })
        self._scores = pd.DataFrame(rows).set_index("version")
        self._scores.attrs["reference"] = self.reference
        return self._scores

    def cer(self, version: str) -> float:
        value: Any = self.table().loc[version, "cer"]
        return float(value)

    def _repr_html_(self) -> str:
        from workbench_ext.panels import html_table

        return (
            f"<p>{html.escape(self.model)}: {len(self.images)} images, CER against "
            f"{html.escape(self.reference)}</p>" + html_table(self.table())
        )


def page_text(lines: Sequence[TextLine]) -> str:
    """The text of boxes in reading order: boxes on one row (vertical centres closer than
    half a box height) joined by spaces, rows by newlines; a detector that finds words
    and one that finds lines then read the same page alike."""
    rows: list[list[str]] = []
    last: tuple[float, float] | None = None
    for line in lines:
        top, bottom = float(line.box[:, 1].min()), float(line.box[:, 1].max())
        centre, height = (top + bottom) / 2, max(1.0, bottom - top)
        if last is not None and abs(centre - last[0]) < max(height, last[1]) / 2:
            rows[-1].append(line.text)
        else:
            rows.append([line.text])
        last = (centre, height)
    return "\n".join(" ".join(words) for words in rows)


def stages(session: Session, model: str, version: str) -> dict[str, tuple[str, str]]:
    """``role -> (stage model, stage version)`` of a pipeline version (verified)."""
    if session.repo.kind(model, version) != "pipeline":
        raise SessionError(f"{model}:{version} is a model, not an OCR pipeline (publish one with "
                           "`workbench models publish-pipeline`)")
    pipeline = session.repo.verify_pipeline(model, version)
    return {stage.role: (stage.model, stage.version) for stage in pipeline.stages}


def _predictor(session: Session, model: str, version: str) -> Callable[[Array], Array]:
    hub = session.hub(model)
    name = hub.get(version).inputs[0].name

    def predict(batch: Array) -> Array:
        outputs = hub.predict({name: np.ascontiguousarray(batch, dtype=np.float32)}, version=version)
        return next(iter(outputs.outputs.values()))

    return predict


def _chain(session: Session, model: str, version: str) -> Callable[[Array], list[TextLine]]:
    parts = stages(session, model, version)
    codecs: dict[str, Codec] = {}
    predicts: dict[str, Callable[[Array], Array]] = {}
    for role, (stage_model, stage_version) in parts.items():
        manifest = session.repo.manifest(stage_model, stage_version)
        if manifest.codec is None:
            raise SessionError(
                f"{stage_model}:{stage_version} has no codec (publish it with an inference.yml)"
            )
        codecs[role] = Codec(manifest.codec)
        predicts[role] = _predictor(session, stage_model, stage_version)
    chain = OcrChain(codecs["det"], codecs["rec"], codecs.get("cls"))

    def read(image: Array) -> list[TextLine]:
        return chain.run([image], predicts["det"], predicts["rec"], predicts.get("cls"))[0]

    return read


def _load_stages(session: Session, model: str, versions: Sequence[str], progress: bool) -> None:
    wanted: dict[str, list[str]] = {}
    for version in versions:
        for stage_model, stage_version in stages(session, model, version).values():
            hub = session.hubs.get(stage_model)
            loaded = {str(lv.version) for lv in hub.loaded} if hub is not None else set()
            if stage_version not in loaded and stage_version not in wanted.get(stage_model, []):
                wanted.setdefault(stage_model, []).append(stage_version)
    for stage_model, stage_versions in wanted.items():
        ops.load_versions(session, stage_model, stage_versions, activate=False, progress=progress)


def as_images(value: Any) -> list[Array]:
    """A list of images: HWC uint8 BGR arrays (one array of rank 3 is one image)."""
    if isinstance(value, np.ndarray) and value.ndim == 3:
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise SessionError("--images must be a list of images (HxWx3 uint8 BGR arrays)")
    images: list[Array] = []
    for index, image in enumerate(value):
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise SessionError(f"image {index} has shape {array.shape}, not HxWx3")
        images.append(np.ascontiguousarray(array.astype(np.uint8, copy=False)))
    return images


def run_ocr(
    session: Session,
    model: str,
    versions: Sequence[str],
    images: Any,
    *,
    truth: Sequence[str] | None = None,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> OcrResult:
    """Read ``images`` with each pipeline version of ``model``; score against ``truth`` or the first."""
    if not versions:
        raise SessionError(f"name the versions of {model} to compare, e.g. 5.0.0 4.0.0")
    chosen = [str(session.repo.resolve(model, v)) for v in versions]
    pictures = as_images(images)
    if truth is not None:
        truth = [str(t) for t in truth]
        if len(truth) != len(pictures):
            raise SessionError(f"{len(truth)} ground-truth texts for {len(pictures)} images")
    _load_stages(session, model, chosen, progress)
    total = len(chosen) * len(pictures)
    lines: dict[str, list[list[TextLine]]] = {v: [] for v in chosen}
    seconds: dict[str, list[float]] = {v: [] for v in chosen}

    def work() -> OcrResult:
        readers = {v: _chain(session, model, v) for v in chosen}
        for image in pictures:
            for version in chosen:
                started = time.perf_counter()
                lines[version].append(readers[version](image))
                seconds[version].append(time.perf_counter() - started)
                if on_progress is not None:
                    on_progress(sum(len(s) for s in seconds.values()), total)
        return OcrResult(model, chosen, pictures, lines, seconds, truth)

    return run_with_progress(
        work,
        desc=f"OCR {model} {' '.join(chosen)}",
        total=total,
        done=lambda: sum(len(s) for s in seconds.values()),
        unit="image",
        disable=not progress,
    )


def diff_html(reference: str, text: str) -> str:
    """``text`` as HTML, what differs from ``reference`` marked: changed or added characters
    highlighted, dropped ones struck through."""
    out = []
    matcher = difflib.SequenceMatcher(a=reference, b=text, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            out.append(html.escape(text[b0:b1]))
            continue
        if a1 > a0 and op in ("delete", "replace"):
            out.append(f"<del style='color:#c62828'>{html.escape(reference[a0:a1])}</del>")
        if b1 > b0:
            out.append(f"<mark style='background:#ffe082'>{html.escape(text[b0:b1])}</mark>")
    return "".join(out).replace("\n", "<br>")
