from __future__ import annotations

import pytest

from workbench.model.version import ModelRef, Version, check_alias


def test_versions_order_by_semver_precedence() -> None:
    texts = ["1.10.0", "1.2.0", "1.2.0-rc.1", "1.2.0-alpha", "1.2.0-rc.10", "0.9.9", "1.2.0+20260405"]
    ordered = [str(v) for v in sorted(Version.parse(t) for t in texts)]
    assert ordered == ["0.9.9", "1.2.0-alpha", "1.2.0-rc.1", "1.2.0-rc.10", "1.2.0", "1.2.0+20260405", "1.10.0"]


def test_version_round_trips_and_rejects_garbage() -> None:
    assert str(Version.parse("v2.0.1+build.7")) == "2.0.1+build.7"
    for bad in ["1.2", "01.2.3", "1.2.3.4", "latest", ""]:
        with pytest.raises(ValueError, match="semantic version"):
            Version.parse(bad)


def test_model_refs_parse_alias_and_version_forms() -> None:
    assert ModelRef.parse("digits@stable") == ModelRef("digits", "stable")
    assert ModelRef.parse("digits:1.2.0") == ModelRef("digits", "1.2.0")
    assert ModelRef.parse("digits") == ModelRef("digits", None)
    assert ModelRef.parse("1.1.0", default_model="digits") == ModelRef("digits", "1.1.0")
    assert str(ModelRef("digits", "canary")) == "digits@canary"
    assert str(ModelRef("digits", "1.0.0")) == "digits:1.0.0"
    with pytest.raises(ValueError):
        ModelRef.parse("digits@")


def test_aliases_must_be_words_not_versions() -> None:
    assert check_alias("stable") == "stable"
    for bad in ["1.0.0", "Stable", "", "has space", "-x"]:
        with pytest.raises(ValueError):
            check_alias(bad)
