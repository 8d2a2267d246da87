"""Semantic versions and model references.

A version directory is named by a semantic version, optionally with a build
suffix (``1.2.0``, ``1.2.0-rc.1``, ``1.2.0+20260405``). Aliases such as
``stable`` name versions; a reference to a version is ``name@alias``,
``name:version`` or a bare version or alias where the model is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A semantic version; ordered by semver precedence, then by build suffix."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    def __post_init__(self) -> None:
        if min(self.major, self.minor, self.patch) < 0:
            raise ValueError(f"version numbers must be non-negative: {self}")

    @classmethod
    def parse(cls, text: str | Version) -> Version:
        """Parse ``1.2.3``, ``1.2.3-rc.1`` or ``1.2.3+build``; raise ValueError otherwise."""
        if isinstance(text, Version):
            return text
        match = _SEMVER.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a semantic version (expected e.g. 1.2.0 or 1.2.0+20260405)")
        pre = match["pre"]
        return cls(
            int(match["major"]),
            int(match["minor"]),
            int(match["patch"]),
            tuple(pre.split(".")) if pre else (),
            match["build"] or "",
        )

    @staticmethod
    def is_version(text: str) -> bool:
        return _SEMVER.match(text.strip()) is not None

    def _key(self) -> tuple[object, ...]:
        # A release sorts after its pre-releases; numeric identifiers sort before
        # alphanumeric ones (semver §11). The build suffix breaks remaining ties so
        # two directories never compare equal unless their names are.
        pre: tuple[tuple[int, int | str], ...] = tuple(
            (0, int(part)) if part.isdigit() else (1, part) for part in self.prerelease
        )
        release = (1,) if not self.prerelease else (0,)
        return (self.major, self.minor, self.patch, release, pre, self.build)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text


def check_alias(name: str) -> str:
    """Return ``name`` if it is a valid alias (lowercase word, not a version)."""
    if not _ALIAS.match(name) or Version.is_version(name):
        raise ValueError(
            f"invalid alias {name!r}: use a lowercase word of letters, digits, '-' and '_' "
            "starting with a letter (e.g. stable, canary)"
        )
    return name


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name (also a safe directory name)."""
    if not _MODEL.match(name) or name in {".", ".."}:
        raise ValueError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ModelRef:
    """A reference to one version of a model: ``digits@stable``, ``digits:1.2.0``, ``digits``.

    ``ref`` is a version string or an alias; ``None`` means the model's default (latest).
    """

    model: str
    ref: str | None = None

    def __post_init__(self) -> None:
        check_model_name(self.model)
        if self.ref is not None and not Version.is_version(self.ref):
            check_alias(self.ref)

    @classmethod
    def parse(cls, text: str, default_model: str | None = None) -> ModelRef:
        """Parse ``model@alias``, ``model:version``, ``model``, or a bare version/alias.

        A bare word is a model name, or, when ``default_model`` is given, a version
        or alias of that model.
        """
        text = text.strip()
        for sep in ("@", ":"):
            if sep in text:
                model, _, ref = text.partition(sep)
                if not model or not ref:
                    raise ValueError(f"invalid model reference {text!r}: expected model{sep}ref")
                return cls(model, ref)
        if default_model is not None:
            return cls(default_model, text)
        return cls(text, None)

    def __str__(self) -> str:
        if self.ref is None:
            return self.model
        sep = ":" if Version.is_version(self.ref) else "@"
        return f"{self.model}{sep}{self.ref}"
