"""OCR pipeline versions judged on images: image rows replayed, each answer read as a page.

A pipeline version (:mod:`workbench.serving.pipelines`) takes encoded images as one
``BYTES`` input and answers every line it read (``text``, ``boxes``, ``image_index``...).
The deploy layer sends it the images one request each (:func:`read_pages`), so each
answer is one :class:`~workbench.runtime.scoring.Page`, and scores two versions' pages
against each other, or against ground truth, with :mod:`workbench.runtime.scoring`
(task ``ocr``: the CER of each page's text, its lines joined by newlines; box F1).

The images, best first: a **labelled OCR set** — a directory of images with a
``texts.json`` naming the lines each holds::

    pages/
      invoice.png
      receipt.jpg
      texts.json     {"invoice.png": ["Invoice No. 48213", "Total: 1375.40 EUR"],
                      "receipt.jpg": "Thank you\\nCome again"}

(a list of lines, or one string with a newline between lines) — so the candidate's CER
against the truth is measured beside the stable's; else the stable instance's reservoir
of live image rows (``GET /v2/admin/reservoir``, base64 ``BYTES``). A directory without
``texts.json`` is a plain image sample (deploy verification's ``--sample``).

:func:`ocr_check` gives the canary its :class:`~workbench.deploy.rollout.signals.OutputCheck`
(``score``: the candidate's CER against stable; ``truth_stable``/``truth_candidate``:
each one's CER against the labelled set), :func:`pages_agreement` gives deploy
verification its :class:`~workbench.deploy.rollout.agreement.AgreementReport`.
An image either instance cannot answer (a 503, a timeout) is left out and counted as a
failed replay with its reason (:class:`~workbench.deploy.rollout.replay.ReplayFailures`):
missing evidence, never a page read as nothing. Deploy verification names them as errors.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.deploy.client import ServingClient
from workbench.deploy.rollout.agreement import AgreementReport, OutputAgreement
from workbench.deploy.rollout.phases import MIN_AGREEMENT_ROWS
from workbench.deploy.rollout.replay import ReplayFailures, fetch_reservoir, nothing_compared
from workbench.errors import DeployError, InputError, ServingError
from workbench.model.task import Task
from workbench.runtime import scoring
from workbench.runtime.scoring import Page

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from workbench._types import Array, StrPath
    from workbench.deploy.rollout.signals import OutputCheck

__all__ = ["TEXTS", "ImageSet", "load_images", "ocr_check", "pages_agreement",
           "read_page", "read_pages"]

log = logging.getLogger(__name__)

#: The ground truth of a labelled OCR set: image file name -> its lines.
TEXTS = "texts.json"
#: The input name images are sent under (a pipeline's one ``BYTES`` input).
INPUT = "image"
#: How an image file starts: PNG, JPEG, BMP, TIFF (both byte orders), WebP (RIFF).
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


@dataclass(frozen=True)
class ImageSet:
    """Images to replay (encoded, as clients send them) and, for a labelled set, the
    ground truth of each (text-only pages; empty for a plain sample)."""

    source: str
    names: tuple[str, ...]
    images: tuple[bytes, ...]
    truths: tuple[Page, ...] = ()

    @property
    def labelled(self) -> bool:
        return bool(self.truths)


def load_images(path: StrPath, *, labelled: bool = False) -> ImageSet:
    """The images of a directory (with their truths from ``texts.json`` when there is one;
    ``labelled``: it must be there). DeployError, one sentence, on the first problem."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DeployError(f"the image set {folder} is not a directory (of images and {TEXTS})")
    texts_file = folder / TEXTS
    if texts_file.is_file():
        truth = _read_texts(texts_file)
        names = list(truth)
    elif labelled:
        raise DeployError(f"the labelled OCR set {folder} has no {TEXTS} (image name -> its lines)")
    else:
        truth = {}
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = []
    for name in names:
        file = folder / name
        if Path(name).name != name or not file.is_file():
            raise DeployError(f"{texts_file} names {name!r}, which is not an image in {folder}")
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise DeployError(f"cannot read {file}: {exc.strerror}") from exc
        if not data.startswith(_MAGIC):
            raise DeployError(f"{file} is not an image (PNG, JPEG, BMP, TIFF or WebP)")
        images.append(data)
    if not images:
        raise DeployError(f"the image set {folder} holds no images")
    return ImageSet(str(folder), tuple(names), tuple(images),
                    tuple(Page(tuple(truth[name])) for name in names) if truth else ())


def _read_texts(file: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeployError(f"cannot read {file}: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise DeployError(f"{file} must map each image's file name to its lines")
    truth = {}
    for name, lines in data.items():
        if isinstance(lines, str):
            lines = lines.split("\n")
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise DeployError(f"{file}: the lines of {name!r} must be a list of strings or one string")
        truth[str(name)] = lines
    return truth


def read_page(outputs: Mapping[str, Array]) -> Page:
    """One image's answer (a pipeline's ``text`` and ``boxes``) as a page."""
    import numpy as np

    try:
        texts = [v.decode() if isinstance(v, bytes) else str(v) for v in outputs["text"].reshape(-1)]
        boxes = np.asarray(outputs["boxes"], dtype=np.float64).reshape(-1, 4, 2)
    except KeyError as exc:
        raise ServingError(f"not a pipeline's answer: it has no {exc.args[0]!r} output") from None
    except ValueError as exc:
        raise ServingError(f"not a pipeline's answer: {exc}") from exc
    if len(texts) != len(boxes):
        raise ServingError(f"a pipeline's answer with {len(texts)} texts but {len(boxes)} boxes")
    return Page(tuple(texts), boxes)


def read_pages(client: ServingClient, model: str, images: Sequence[bytes]) -> list[Page | None]:
    """Each image's page as ``client`` reads it, one request per image (None: it failed)."""
    pages: list[Page | None] = []
    for index, image in enumerate(images):
        try:
            pages.append(_read(client, model, image))
        except ServingError as exc:
            log.info("%s: %s could not read image %d: %s", model, client.base_url, index, exc)
            pages.append(None)
    return pages


def _read(client: ServingClient, model: str, image: bytes) -> Page:
    """One image's page as ``client`` reads it (ServingError when it cannot)."""
    import numpy as np

    row = np.empty(1, dtype=np.object_)
    row[0] = bytes(image)
    return read_page(client.infer(model, {INPUT: row}).outputs)


def _paired(stable: ServingClient, candidate: ServingClient, model: str, images: Sequence[bytes]
            ) -> tuple[list[int], list[Page], list[Page], ReplayFailures]:
    """The images both colours read (their indices) and each one's pages; the images
    either could not read are left out, counted by reason (missing evidence)."""
    kept: list[int] = []
    wanted: list[Page] = []
    got: list[Page] = []
    failures = ReplayFailures()
    for index, image in enumerate(images):
        pages: list[Page] = []
        for side, client in (("stable", stable), ("candidate", candidate)):
            try:
                pages.append(_read(client, model, image))
            except ServingError as exc:
                log.info("%s: %s could not read image %d: %s", model, side, index, exc)
                failures.add(side, 1, exc)
                break
        else:
            kept.append(index)
            wanted.append(pages[0])
            got.append(pages[1])
    return kept, wanted, got, failures


def _replay(stable_url: str, candidate_url: str, model: str, sample: ImageSet,
            timeout: float) -> OutputCheck:
    marked = {"x-workbench-replay": "1"}  # counted apart from live traffic, never kept
    with ServingClient(stable_url, timeout=timeout, headers=marked) as stable, \
            ServingClient(candidate_url, timeout=timeout, headers=marked) as candidate:
        kept, wanted, got, failures = _paired(stable, candidate, model, sample.images)
    if not kept:
        return nothing_compared(failures)
    digests = [_digest(sample.images[i]) for i in kept]
    try:
        score = scoring.score(Task.OCR, wanted, got)
        row_scores = tuple(zip(digests, score.rows, strict=True))
        truth_stable = truth_candidate = None
        row_truth: tuple[tuple[bytes, float], ...] = ()
        if sample.labelled:
            truths = [sample.truths[i] for i in kept]
            truth_stable = scoring.score(Task.OCR, truths, wanted)
            truth_candidate = scoring.score(Task.OCR, truths, got)
            worse = [c - s for s, c in zip(truth_stable.rows, truth_candidate.rows, strict=True)]
            row_truth = tuple(zip(digests, worse, strict=True))
    except InputError as exc:
        log.warning("%s: replayed pages cannot be scored: %s", model, exc)
        return nothing_compared(failures)
    return failures.check(rows=len(kept), agreement=None, accuracy_stable=None,
                          accuracy_candidate=None, score=score, truth_stable=truth_stable,
                          truth_candidate=truth_candidate, row_scores=row_scores,
                          row_truth=row_truth)


def _digest(image: bytes) -> bytes:
    """A short digest of an image's bytes: the same image replayed again has the same one."""
    import hashlib

    return hashlib.blake2b(image, digest_size=16).digest()


def ocr_check(
    stable_url: str,
    candidate_url: str,
    model: str,
    *,
    labelled: StrPath | None = None,
    admin_token: str | None = None,
    timeout: float = 120.0,
) -> OutputCheck:
    """Replay the labelled OCR set, else the stable instance's reservoir of image rows
    (with ``admin_token``), to both instances; pages scored as the module docstring says."""
    if labelled is not None:
        return _replay(stable_url, candidate_url, model, load_images(labelled, labelled=True),
                       timeout)
    if admin_token is not None:
        try:
            rows = fetch_reservoir(stable_url, admin_token)
        except ServingError as exc:
            log.warning("%s: %s; nothing to replay", model, exc)
            rows = {}
        images = [bytes(v) for array in rows.values() if array.dtype.kind == "O"
                  for v in array.reshape(-1) if isinstance(v, bytes)]
        if images:
            return _replay(stable_url, candidate_url, model,
                           ImageSet("reservoir", (), tuple(images)), timeout)
    return nothing_compared()


def pages_agreement(
    stable: ServingClient,
    candidate: ServingClient,
    model: str,
    samples: Sequence[ImageSet],
    *,
    min_agreement: float = 0.0,
    min_rows: int = MIN_AGREEMENT_ROWS,
    stable_version: str | None = None,
    candidate_version: str | None = None,
) -> AgreementReport:
    """Deploy verification's agreement check of two pipeline versions on image samples:
    the candidate's pages against stable's, judged by CER within ``1 - min_agreement``
    (:func:`~workbench.runtime.scoring.agreement_threshold`), box F1 and exact match beside it."""
    started = time.perf_counter()
    errors: list[str] = []
    wanted: list[Page] = []
    got: list[Page] = []
    for sample in samples:
        _, left, right, failures = _paired(stable, candidate, model, sample.images)
        if failures.rows:
            why = ", ".join(f"{reason} ({n})" for reason, n in failures.reasons)
            errors.append(f"{sample.source}: {failures.rows} of its {len(sample.images)} "
                          f"images could not be read: {why}")
        wanted.extend(left)
        got.extend(right)
    outputs: tuple[OutputAgreement, ...] = ()
    if wanted:
        threshold = scoring.agreement_threshold(Task.OCR, min_agreement)
        given = (threshold,) if threshold is not None else ()
        scores = scoring.score_all(Task.OCR, wanted, got, thresholds=given, min_n=min_rows)
        nan = float("nan")
        outputs = (OutputAgreement("text", len(wanted), None, nan, nan, scores),)
    report = AgreementReport(
        model=model, stable_version=stable_version, candidate_version=candidate_version,
        sources=tuple(s.source for s in samples), rows=len(wanted), outputs=outputs,
        errors=tuple(errors), min_top1=min_agreement, min_rows=min_rows,
        seconds=time.perf_counter() - started, task=Task.OCR,
        extra={"pages": [{"stable": w.text, "candidate": g.text} for w, g in zip(wanted, got,
                                                                                 strict=True)][:20]},
    )
    log.info("%s: %s", model, report.summary())
    return report

