"""The image operations a PaddleX export's ``PreProcess.transform_ops`` names.

Each operation is a callable over a *sample*: a dict holding at least ``image`` (an
HWC uint8 array once decoded) and, after a resize, ``shape`` = ``[src_h, src_w,
ratio_h, ratio_w]`` so a post-processor can map results back to the source image.
The names and parameters are PaddleOCR's / PaddleClas's (``DecodeImage``,
``DetResizeForTest``, ``NormalizeImage``, ``ToCHWImage``, ``ResizeImage``,
``CropImage``, ``RecResizeImg``, ``ClsResizeImg``, ``KeepKeys``); the arithmetic follows theirs so a
served model sees the tensors it was exported for. Label encoders
(``DetLabelEncode``, ``MultiLabelEncode``, ...) prepare training targets: an export
lists them, inference skips them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.codecs._deps import cv2
from workbench.errors import CodecError, ImageDecodeError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench._types import Array

Sample = dict[str, Any]


def _number(value: object, what: str) -> float:
    """A number from YAML, where PaddleX writes fractions as text (``scale: 1./255.``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        parts = value.replace(" ", "").split("/")
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) == 1:
            return numbers[0]
        if len(numbers) == 2 and numbers[1] != 0:
            return numbers[0] / numbers[1]
    raise CodecError(f"{what} must be a number or a fraction such as 1./255., not {value!r}")


def _numbers(values: object, what: str) -> list[float]:
    if not isinstance(values, list | tuple) or len(values) not in (1, 3):
        raise CodecError(f"{what} must be a list of 1 or 3 numbers, not {values!r}")
    return [_number(v, what) for v in values]


class DecodeImage:
    """Encoded bytes (PNG, JPEG, BMP, TIFF, WebP) or an HWC uint8 array -> HWC uint8.

    Bytes are decoded by opencv into BGR (``img_mode: BGR``, PaddleX's default) or
    converted to RGB / GRAY; an array is taken as already in ``img_mode`` (a 2-D gray
    array is expanded to three channels, a fourth alpha channel dropped).
    """

    def __init__(self, img_mode: str = "BGR", channel_first: bool = False, **_: Any) -> None:
        if img_mode not in {"BGR", "RGB", "GRAY"}:
            raise CodecError(f"DecodeImage: img_mode must be BGR, RGB or GRAY, not {img_mode!r}")
        self.img_mode = img_mode
        self.channel_first = bool(channel_first)

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        if isinstance(image, bytes | bytearray | memoryview):
            image = self.decode(bytes(image))
        else:
            image = _as_hwc(image)
        if self.channel_first:
            image = image.transpose((2, 0, 1))
        sample["image"] = image
        return sample

    def decode(self, data: bytes) -> Array:
        if not data:
            raise ImageDecodeError("the image is empty (0 bytes)")
        flag = cv2().IMREAD_GRAYSCALE if self.img_mode == "GRAY" else cv2().IMREAD_COLOR
        image = cv2().imdecode(np.frombuffer(data, dtype=np.uint8), flag)
        if image is None:
            raise ImageDecodeError(
                f"{len(data)} bytes starting {data[:8]!r} are not an image "
                "(PNG, JPEG, BMP, TIFF or WebP expected)"
            )
        if self.img_mode == "RGB":
            image = cv2().cvtColor(image, cv2().COLOR_BGR2RGB)
        result: Array = image
        return result


def _as_hwc(image: object) -> Array:
    if not isinstance(image, np.ndarray):
        raise ImageDecodeError(
            f"an image must be bytes or an HWC uint8 array, not {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ImageDecodeError(f"an image array must be uint8, not {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(
            f"an image array must be HxW or HxWxC with C in 1, 3, 4, not {list(image.shape)}"
        )
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageDecodeError(f"an image array must not be empty, got {list(image.shape)}")
    return np.ascontiguousarray(image)


class DetResizeForTest:
    """Resize for text detection to sides the network accepts (multiples of 32 or 128).

    Exactly one of PaddleOCR's three modes, chosen by the parameters given:
    ``image_shape: [h, w]`` (fixed, optionally ``keep_ratio``), ``limit_side_len`` with
    ``limit_type`` (``min``: the short side at least, ``max``: the long side at most,
    ``resize_long``: the long side exactly; rounded to 32), or ``resize_long`` (the long
    side scaled to it, both sides rounded up to 128). With none, ``limit_side_len: 736,
    limit_type: min``. ``max_side_limit`` (default 4000) caps the long side.
    """

    def __init__(self, **params: Any) -> None:
        self.image_shape = params.get("image_shape")
        self.keep_ratio = bool(params.get("keep_ratio", False))
        self.max_side_limit = int(params.get("max_side_limit", 4000))
        if self.image_shape is not None:
            self.mode = "fixed"
        elif "limit_side_len" in params:
            self.mode = "limit"
        elif "resize_long" in params:
            self.mode = "long"
        else:
            self.mode = "limit"
        self.limit_side_len = int(params.get("limit_side_len", 736))
        self.limit_type = str(params.get("limit_type", "min"))
        self.resize_long = int(params.get("resize_long", 960))
        if self.limit_type not in {"min", "max", "resize_long"}:
            raise CodecError(
                f"DetResizeForTest: limit_type must be min, max or resize_long, not {self.limit_type!r}"
            )

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        src_h, src_w = image.shape[:2]
        if self.mode == "fixed":
            resize_h, resize_w = self._fixed(src_h, src_w)
        elif self.mode == "long":
            resize_h, resize_w = self._long(src_h, src_w)
        else:
            resize_h, resize_w = self._limit(src_h, src_w)
        sample["image"] = cv2().resize(image, (resize_w, resize_h))
        sample["shape"] = [src_h, src_w, resize_h / src_h, resize_w / src_w]
        return sample

    def _fixed(self, h: int, w: int) -> tuple[int, int]:
        resize_h, resize_w = (int(v) for v in self.image_shape)  # type: ignore[union-attr]
        if self.keep_ratio:
            resize_w = math.ceil(w * resize_h / h / 32) * 32
        return resize_h, resize_w

    def _limit(self, h: int, w: int) -> tuple[int, int]:
        limit = self.limit_side_len
        if self.limit_type == "max":
            ratio = limit / max(h, w) if max(h, w) > limit else 1.0
        elif self.limit_type == "min":
            ratio = limit / min(h, w) if min(h, w) < limit else 1.0
        else:
            ratio = limit / max(h, w)
        resize_h, resize_w = int(h * ratio), int(w * ratio)
        if max(resize_h, resize_w) > self.max_side_limit:
            scale = self.max_side_limit / max(resize_h, resize_w)
            resize_h, resize_w = int(resize_h * scale), int(resize_w * scale)
        return max(round(resize_h / 32) * 32, 32), max(round(resize_w / 32) * 32, 32)

    def _long(self, h: int, w: int) -> tuple[int, int]:
        ratio = self.resize_long / max(h, w)
        resize_h, resize_w = int(h * ratio), int(w * ratio)
        stride = 128
        return (
            max((resize_h + stride - 1) // stride * stride, stride),
            max((resize_w + stride - 1) // stride * stride, stride),
        )


class NormalizeImage:
    """``(image * scale - mean) / std`` per channel, as float32 (``order``: hwc or chw)."""

    def __init__(self, scale: object = "1./255.", mean: object = None, std: object = None,
                 order: str = "hwc", **_: Any) -> None:
        self.scale = np.float32(_number(scale, "NormalizeImage scale"))
        mean_list = _numbers([0.485, 0.456, 0.406] if mean is None else mean, "NormalizeImage mean")
        std_list = _numbers([0.229, 0.224, 0.225] if std is None else std, "NormalizeImage std")
        if order not in {"hwc", "chw"}:
            raise CodecError(f"NormalizeImage: order must be hwc or chw, not {order!r}")
        shape = (1, 1, -1) if order == "hwc" else (-1, 1, 1)
        self.mean = np.array(mean_list, dtype=np.float32).reshape(shape)
        self.std = np.array(std_list, dtype=np.float32).reshape(shape)
        if np.any(self.std == 0):
            raise CodecError("NormalizeImage: std must not be 0")

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"].astype(np.float32)
        sample["image"] = (image * self.scale - self.mean) / self.std
        return sample


class ToCHWImage:
    """HWC -> CHW."""

    def __init__(self, **_: Any) -> None:
        pass

    def __call__(self, sample: Sample) -> Sample:
        sample["image"] = sample["image"].transpose((2, 0, 1))
        return sample


class ResizeImage:
    """PaddleClas' resize: ``resize_short`` (the short side to it, ratio kept) or ``size``
    (an int for a square, or ``[w, h]``)."""

    def __init__(self, size: object = None, resize_short: object = None, **_: Any) -> None:
        if (size is None) == (resize_short is None):
            raise CodecError("ResizeImage needs exactly one of size or resize_short")
        self.resize_short = None if resize_short is None else int(resize_short)  # type: ignore[call-overload]
        self.size: tuple[int, int] | None = None
        if size is not None:
            self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))  # type: ignore[index]

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        h, w = image.shape[:2]
        if self.size is not None:
            width, height = self.size
        else:
            percent = float(self.resize_short) / min(w, h)  # type: ignore[arg-type]
            width, height = round(w * percent), round(h * percent)
        sample["image"] = cv2().resize(image, (max(width, 1), max(height, 1)))
        return sample


class CropImage:
    """Centre crop to ``size`` (an int for a square, or ``[w, h]``)."""

    def __init__(self, size: object = 224, **_: Any) -> None:
        self.width, self.height = (int(size), int(size)) if isinstance(size, int) else (
            int(size[0]), int(size[1]))  # type: ignore[index]

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        h, w = image.shape[:2]
        if w < self.width or h < self.height:
            raise ImageDecodeError(
                f"the image ({w}x{h} after resizing) is smaller than the crop {self.width}x{self.height}"
            )
        top, left = (h - self.height) // 2, (w - self.width) // 2
        sample["image"] = image[top : top + self.height, left : left + self.width]
        return sample


class RecResizeImg:
    """Resize a text line to height ``image_shape[1]``, ratio kept, normalised to [-1, 1], CHW.

    As in PaddleOCR's recogniser, the width depends on the batch: every line of a batch
    is resized to ``ceil(h * w_i / h_i)`` but at most the batch width ``int(h * max(w0 / h0,
    widest line's ratio))``, then zero-padded to it. So this operation only records the
    line's ratio; :meth:`workbench.codecs.codec.Codec.batches` calls :meth:`resize` once
    the batch is known.
    """

    def __init__(self, image_shape: object = (3, 48, 320), **_: Any) -> None:
        try:
            channels, height, width = (int(v) for v in image_shape)  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            raise CodecError(f"RecResizeImg: image_shape must be [c, h, w], not {image_shape!r}") from None
        self.channels, self.height, self.width = channels, height, width

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["image"].shape[:2]
        sample["wh_ratio"] = w / h
        return sample

    def batch_width(self, ratios: list[float]) -> int:
        """The width of a batch of lines with these width/height ratios."""
        return int(self.height * max(self.width / self.height, *ratios))

    def resize(self, image: Array, width: int) -> Array:
        """``image`` (HWC uint8) as a (C, H, ``width``) float32 line, zero-padded on the right."""
        h, w = image.shape[:2]
        resized_w = min(width, math.ceil(self.height * (w / h)))  # PaddleOCR's rounding
        resized = cv2().resize(image, (resized_w, self.height)).astype(np.float32)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        padded = np.zeros((self.channels, self.height, width), dtype=np.float32)
        padded[:, :, :resized_w] = (resized.transpose((2, 0, 1)) / 255.0 - 0.5) / 0.5
        return padded


class ClsResizeImg:
    """PaddleOCR's text-direction classifier input: a line resized to height ``image_shape[1]``,
    ratio kept, at most ``image_shape[2]`` wide, normalised to [-1, 1], CHW, zero-padded on
    the right to ``image_shape[2]`` (RapidOCR's and PaddleOCR's ``resize_norm_img``; a
    plain ``ResizeImage`` would stretch a long line and turn its reading upside down)."""

    def __init__(self, image_shape: object = (3, 48, 192), **_: Any) -> None:
        self.line = RecResizeImg(image_shape)

    def __call__(self, sample: Sample) -> Sample:
        sample["image"] = self.line.resize(sample["image"], self.line.width)
        return sample


class KeepKeys:
    """Training keeps image and labels; at inference only the image goes to the model."""

    def __init__(self, **_: Any) -> None:
        pass

    def __call__(self, sample: Sample) -> Sample:
        return sample


#: Operation name -> class; the names an export's ``transform_ops`` may use.
OPERATIONS: Mapping[str, type] = {
    "DecodeImage": DecodeImage,
    "DetResizeForTest": DetResizeForTest,
    "NormalizeImage": NormalizeImage,
    "ToCHWImage": ToCHWImage,
    "ResizeImage": ResizeImage,
    "CropImage": CropImage,
    "RecResizeImg": RecResizeImg,
    "ClsResizeImg": ClsResizeImg,
    "KeepKeys": KeepKeys,
}


def training_only(name: str) -> bool:
    """Label encoders build training targets (``DetLabelEncode``, ``MultiLabelEncode``, ...)."""
    return name.endswith("LabelEncode")
