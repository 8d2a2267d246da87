"""How a version's predictor is configured: the ``runtime`` field of its manifest.

A :class:`RuntimeSettings` value names the Paddle Inference switches a version is
loaded with: oneDNN on or off, IR optimisation, memory optimisation, CPU math threads
and passes to delete; on a GPU the precision (fp32, fp16, bf16) and TensorRT with its
dynamic shape ranges. It is recorded in the signed manifest, so a settings change is a
new version (over the same weight files) and a tampered setting fails verification.

``None`` means "Paddle's own default" for a switch: a manifest written before settings
were recorded loads exactly as it did then. The value is pure data; the runtime layer
applies it to a ``paddle.inference.Config`` (``workbench.runtime.paddle_config``).

The text form, as given to ``workbench models publish --runtime``::

    onednn=off,ir_optim=on,memory_optim=on,threads=2,delete_pass=a+b,precision=fp16,tensorrt=on

Keys may come in any order and each at most once; on/off also read as
true/false, yes/no, 1/0. ``delete_pass`` joins pass names with ``+``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from workbench.errors import InputError

PRECISIONS = ("fp32", "fp16", "bf16")
_ON = frozenset({"on", "true", "yes", "1"})
_OFF = frozenset({"off", "false", "no", "0"})
_SWITCHES = frozenset({"onednn", "ir_optim", "memory_optim", "tensorrt"})
KEYS = ("onednn", "ir_optim", "memory_optim", "threads", "delete_pass", "precision", "tensorrt")


class SettingsError(InputError):
    """A runtime settings text or mapping that cannot be read (one sentence)."""


@dataclass(frozen=True)
class ShapeRange:
    """TensorRT's dynamic shape range of one input: smallest, typical and largest shape."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        for label in ("min", "opt", "max"):
            object.__setattr__(self, label, tuple(int(d) for d in getattr(self, label)))
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise SettingsError(f"input {self.name!r}: min, opt and max shapes differ in rank")
        if any(d <= 0 for d in (*self.min, *self.opt, *self.max)):
            raise SettingsError(f"input {self.name!r}: shape range dimensions must be positive")
        if any(lo > mid or mid > hi for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True)):
            raise SettingsError(f"input {self.name!r}: shape range needs min <= opt <= max per dimension")

    @classmethod
    def from_lists(cls, name: str, lists: Any) -> ShapeRange:
        """From PaddleX's ``trt_dynamic_shapes`` entry: ``[min, opt, max]`` shape lists."""
        try:
            low, mid, high = (tuple(int(d) for d in shape) for shape in lists)
        except (TypeError, ValueError) as exc:
            raise SettingsError(
                f"input {name!r}: a shape range is three lists of integers (min, opt, max)"
            ) from exc
        return cls(name, low, mid, high)


@dataclass(frozen=True)
class RuntimeSettings:
    """The Paddle Inference settings of one version (``None``: Paddle's default)."""

    onednn: bool | None = None
    ir_optim: bool | None = None
    memory_optim: bool | None = None
    cpu_threads: int | None = None
    delete_passes: tuple[str, ...] = ()
    # GPU only (unrun on CPU machines): compute precision and TensorRT subgraphs.
    precision: str = "fp32"
    tensorrt: bool = False
    trt_shapes: tuple[ShapeRange, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "delete_passes", tuple(self.delete_passes))
        object.__setattr__(self, "trt_shapes", tuple(self.trt_shapes))
        threads = self.cpu_threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise SettingsError(f"threads must be a positive integer, not {self.cpu_threads!r}")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if any(not name or not name.replace("_", "").isalnum() for name in self.delete_passes):
            raise SettingsError(
                f"pass names are letters, digits and underscores, not {list(self.delete_passes)}"
            )

    @property
    def is_default(self) -> bool:
        return self == RuntimeSettings()

    # -- text form -------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, *, base: RuntimeSettings | None = None) -> RuntimeSettings:
        """Read ``key=value,...`` over ``base`` (default: all Paddle defaults)."""
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep or not value:
                raise SettingsError(
                    f"runtime setting {item!r} needs the form key=value (keys: {', '.join(KEYS)})"
                )
            if key not in KEYS:
                raise SettingsError(f"unknown runtime setting {key!r}; known settings: {', '.join(KEYS)}")
            if key in seen:
                raise SettingsError(f"runtime setting {key!r} is given twice")
            seen.add(key)
            if key in _SWITCHES:
                values[key] = _switch(key, value)
            elif key == "threads":
                if not value.isdigit() or int(value) < 1:
                    raise SettingsError(f"threads must be a positive integer, not {value!r}")
                values["cpu_threads"] = int(value)
            elif key == "delete_pass":
                values["delete_passes"] = tuple(p.strip() for p in value.split("+") if p.strip())
            else:
                values["precision"] = value.lower()
        return replace(base or cls(), **values)

    def describe(self) -> str:
        """The text form of the settings that differ from Paddle's defaults (``default`` if none)."""
        parts = []
        for key in ("onednn", "ir_optim", "memory_optim"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={'on' if value else 'off'}")
        if self.cpu_threads is not None:
            parts.append(f"threads={self.cpu_threads}")
        if self.delete_passes:
            parts.append("delete_pass=" + "+".join(self.delete_passes))
        if self.precision != "fp32":
            parts.append(f"precision={self.precision}")
        if self.tensorrt:
            parts.append("tensorrt=on")
        return ",".join(parts) or "default"

    def __str__(self) -> str:
        return self.describe()

    # -- manifest form ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "onednn": self.onednn,
            "ir_optim": self.ir_optim,
            "memory_optim": self.memory_optim,
            "cpu_threads": self.cpu_threads,
            "delete_passes": list(self.delete_passes),
            "precision": self.precision,
            "tensorrt": self.tensorrt,
            "trt_shapes": {s.name: [list(s.min), list(s.opt), list(s.max)] for s in self.trt_shapes},
        }

    @classmethod
    def from_dict(cls, data: Any) -> RuntimeSettings:
        """From a manifest's ``runtime`` object; missing keys take Paddle's defaults."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise SettingsError(f"runtime settings must be an object, not {type(data).__name__}")
        unknown = set(data) - {
            "onednn", "ir_optim", "memory_optim", "cpu_threads", "delete_passes",
            "precision", "tensorrt", "trt_shapes",
        }
        if unknown:
            raise SettingsError(f"unknown runtime settings {sorted(unknown)}")
        for key in ("onednn", "ir_optim", "memory_optim"):
            if data.get(key) is not None and not isinstance(data[key], bool):
                raise SettingsError(f"runtime setting {key} must be true, false or null")
        shapes = data.get("trt_shapes") or {}
        if not isinstance(shapes, dict):
            raise SettingsError("trt_shapes must map input names to [min, opt, max] shapes")
        return cls(
            onednn=data.get("onednn"),
            ir_optim=data.get("ir_optim"),
            memory_optim=data.get("memory_optim"),
            cpu_threads=data.get("cpu_threads"),
            delete_passes=tuple(str(p) for p in data.get("delete_passes") or ()),
            precision=str(data.get("precision", "fp32")),
            tensorrt=bool(data.get("tensorrt", False)),
            trt_shapes=tuple(ShapeRange.from_lists(name, lists) for name, lists in shapes.items()),
        )


@dataclass(frozen=True)
class RuntimeTrial:
    """One candidate tried by ``--runtime auto``: its settings and how it fared.

    ``p50_ms`` is the median latency of the sample over a few runs when the candidate
    loaded and agreed with the reference output; otherwise ``reason`` says why it was
    dropped (Paddle's error sentence, or how far its output strayed).
    """

    settings: RuntimeSettings
    ok: bool
    p50_ms: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(), "ok": self.ok, "p50_ms": self.p50_ms, "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Any) -> RuntimeTrial:
        if not isinstance(data, dict) or "settings" not in data:
            raise SettingsError("a runtime trial is an object with settings, ok, p50_ms and reason")
        p50 = data.get("p50_ms")
        return cls(
            RuntimeSettings.from_dict(data["settings"]),
            bool(data.get("ok", False)),
            None if p50 is None else float(p50),
            str(data.get("reason", "")),
        )


def _switch(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _ON:
        return True
    if lowered in _OFF:
        return False
    raise SettingsError(f"runtime setting {key} is on or off, not {value!r}")
