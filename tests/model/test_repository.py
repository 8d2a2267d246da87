"""The repository against real exported Paddle models (copies of the demo repository)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench import ModelRepository, Version
from workbench.errors import (
    AliasError,
    IntegrityError,
    PublishError,
    SignatureError,
    VersionNotFoundError,
)
from workbench.model.manifest import MANIFEST_NAME, Manifest
from workbench.model.signing import generate_keypair
from workbench.runtime.paddle import PaddleProbe

PROBE = PaddleProbe()  # publishing runs each sample once to describe the outputs


def _model_files(repo: Path, version: str, target: Path) -> Path:
    """Copy a version's Paddle files (not its manifest) to ``target``."""
    target.mkdir(parents=True)
    for name in ("inference.json", "inference.pdiparams"):
        shutil.copy(repo / "digits" / version / name, target / name)
    return target


def test_lists_versions_aliases_and_metrics(demo_repo: Path) -> None:
    repo = ModelRepository(demo_repo)
    assert repo.models() == ["digits", "resnet"]
    assert [str(v) for v in repo.versions("digits")] == ["1.0.0", "1.1.0", "1.2.0"]
    aliases = repo.aliases("digits")
    assert {k: str(v) for k, v in aliases.items()} == {"canary": "1.1.0", "latest": "1.2.0", "stable": "1.0.0"}
    manifest = repo.manifest("digits", "stable")
    assert manifest.metrics["accuracy"] > 0.9
    assert repo.manifest("digits", "1.2.0").metrics["accuracy"] < manifest.metrics["accuracy"]
    assert [str(s) for s in manifest.inputs] == ["x: float32[?,64]"]
    assert manifest.outputs[0].shape == (-1, 10)
    assert repo.sample("digits", "1.0.0")["x"].shape == (400, 64)
    assert repo.parse_ref("digits@canary") == ("digits", Version.parse("1.1.0"))
    assert repo.parse_ref("digits:1.2.0") == ("digits", Version.parse("1.2.0"))


def test_publish_is_atomic_and_records_signature(repo_copy: Path, tmp_path: Path) -> None:
    repo = ModelRepository(repo_copy)
    source = _model_files(repo_copy, "1.1.0", tmp_path / "export")
    sample = {"x": np.random.default_rng(0).random((4, 64), dtype=np.float32)}
    manifest = repo.publish("digits", "1.3.0+20260405", source, sample=sample, metrics={"accuracy": 0.5},
                            aliases=["candidate"], probe=PROBE)
    assert manifest.version == "1.3.0+20260405"
    assert {f.path for f in manifest.files} == {"inference.json", "inference.pdiparams", "sample.npz"}
    assert manifest.outputs[0].shape == (-1, 10)
    assert str(repo.resolve("digits", "candidate")) == "1.3.0+20260405"
    assert str(repo.aliases("digits")["latest"]) == "1.3.0+20260405"
    # nothing left behind in the model directory but the version and the alias files
    leftovers = [p.name for p in (repo_copy / "digits").iterdir() if p.name.startswith(".staging")]
    assert leftovers == []
    with pytest.raises(PublishError, match="immutable"):
        repo.publish("digits", "1.3.0+20260405", source, sample=sample, probe=PROBE)


def test_publish_refuses_sources_without_a_model_or_signature(repo_copy: Path, tmp_path: Path) -> None:
    repo = ModelRepository(repo_copy)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="no Paddle model"):
        repo.publish("digits", "2.0.0", empty, sample={"x": np.zeros((1, 64), np.float32)})
    source = _model_files(repo_copy, "1.0.0", tmp_path / "export")
    with pytest.raises(PublishError, match="sample input"):
        repo.publish("digits", "2.0.0", source)
    assert "2.0.0" not in [str(v) for v in repo.versions("digits")]


def test_half_copied_and_hidden_versions_are_invisible(repo_copy: Path) -> None:
    repo = ModelRepository(repo_copy)
    _model_files(repo_copy, "1.0.0", repo_copy / "digits" / "9.0.0")  # no manifest yet
    shutil.copytree(repo_copy / "digits" / "1.0.0", repo_copy / "digits" / ".staging-9.1.0-x")
    assert [str(v) for v in repo.versions("digits")] == ["1.0.0", "1.1.0", "1.2.0"]
    with pytest.raises(VersionNotFoundError, match="9.0.0"):
        repo.resolve("digits", "9.0.0")
    assert str(repo.resolve("digits")) == "1.2.0"


def test_aliases_only_point_at_existing_versions(repo_copy: Path) -> None:
    repo = ModelRepository(repo_copy)
    repo.set_alias("digits", "prod", "1.1.0")
    assert str(repo.resolve("digits", "prod")) == "1.1.0"
    with pytest.raises(AliasError, match="no such version"):
        repo.set_alias("digits", "prod", "7.0.0")
    with pytest.raises(AliasError, match="invalid alias"):
        repo.set_alias("digits", "1.0.0", "1.1.0")
    repo.remove_alias("digits", "prod")
    with pytest.raises(VersionNotFoundError, match="prod"):
        repo.resolve("digits", "prod")


def test_tampered_parameters_are_refused_naming_the_file(repo_copy: Path) -> None:
    repo = ModelRepository(repo_copy)
    repo.verify("digits", "1.0.0")
    params = repo_copy / "digits" / "1.0.0" / "inference.pdiparams"
    data = bytearray(params.read_bytes())
    data[100] ^= 0xFF
    params.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="inference.pdiparams") as info:
        repo.verify("digits", "1.0.0")
    assert info.value.path == "inference.pdiparams"


def test_added_file_is_refused(repo_copy: Path) -> None:
    repo = ModelRepository(repo_copy)
    (repo_copy / "digits" / "1.1.0" / "extra.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="extra.bin"):
        repo.verify("digits", "1.1.0")


def test_signed_versions_verify_and_tampering_is_named(repo_copy: Path, tmp_path: Path) -> None:
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    generate_keypair(private, public)
    repo = ModelRepository(repo_copy, verify_key=public)
    source = _model_files(repo_copy, "1.1.0", tmp_path / "export")
    repo.publish("digits", "3.0.0", source, sample={"x": np.zeros((2, 64), np.float32)},
                 signing_key=private, probe=PROBE)
    repo.verify("digits", "3.0.0")
    with pytest.raises(SignatureError, match="not signed"):
        repo.verify("digits", "1.0.0")
    repo.sign("digits", "1.0.0", private)
    repo.verify("digits", "1.0.0")
    # a manifest edit (e.g. a forged sha256) is caught by the signature, which covers it
    manifest_path = repo_copy / "digits" / "3.0.0" / MANIFEST_NAME
    manifest_path.write_text(manifest_path.read_text().replace('"notes": ""', '"notes": "forged"'))
    with pytest.raises(SignatureError, match=MANIFEST_NAME):
        repo.verify("digits", "3.0.0")
    other_private, other_public = tmp_path / "other.pem", tmp_path / "other.pub"
    generate_keypair(other_private, other_public)
    with pytest.raises(SignatureError):
        repo.verify("digits", "1.0.0", public_key=other_public)


def test_manifest_round_trips(demo_repo: Path) -> None:
    path = demo_repo / "digits" / "1.0.0"
    manifest = Manifest.read(path)
    assert Manifest.from_dict(manifest.to_dict()) == manifest


def test_published_versions_are_readable_by_other_users(repo_copy: Path, tmp_path: Path) -> None:
    import os
    import stat

    repo = ModelRepository(repo_copy)
    source = _model_files(repo_copy, "1.0.0", tmp_path / "export")
    old = os.umask(0o022)
    try:
        repo.publish("digits", "5.0.0", source, sample={"x": np.zeros((1, 64), np.float32)}, aliases=["x"],
                     probe=PROBE)
    finally:
        os.umask(old)
    version_dir = repo_copy / "digits" / "5.0.0"
    assert stat.S_IMODE(version_dir.stat().st_mode) == 0o755
    for path in [*version_dir.iterdir(), repo_copy / "digits" / "aliases.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_version_fingerprint_follows_every_file(repo_copy: Path) -> None:
    repo = ModelRepository(repo_copy)
    version_dir = repo_copy / "digits" / "1.1.0"
    before = repo.version_fingerprint("digits", "1.1.0")
    assert {name for name, *_ in before} >= {MANIFEST_NAME, "inference.pdiparams"}
    assert repo.version_fingerprint("digits", "1.1.0") == before
    (version_dir / "nested").mkdir()
    (version_dir / "nested" / "part").write_bytes(b"1")
    grown = repo.version_fingerprint("digits", "1.1.0")
    assert ("nested/part", 1) in [mark[:2] for mark in grown]
    (version_dir / "nested" / "part").write_bytes(b"12")
    assert repo.version_fingerprint("digits", "1.1.0") != grown
    assert repo.version_fingerprint("digits", "9.9.9") == ()


def test_the_model_layer_runs_models_only_through_a_probe(
    repo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = (
        "import sys; import workbench.model.repository, workbench.model.publishing, workbench.model.ocr_demo; "
        "print(sorted(m for m in sys.modules if m.startswith(('workbench.runtime', 'paddle'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"
    from workbench.model.repository import ModelRepository as Bare

    # the public API's repository is the model layer's, with Paddle as its default probe
    assert ModelRepository is Bare and isinstance(Bare.default_probe, PaddleProbe)
    source = _model_files(repo_copy, "1.0.0", tmp_path / "export")
    manifest = ModelRepository(repo_copy).publish("digits", "2.0.0", source, sample={"x": np.zeros((1, 64), np.float32)})
    assert manifest.outputs[0].shape == (-1, 10)
    # without a probe, publishing cannot describe outputs and says so
    monkeypatch.setattr(Bare, "default_probe", None)
    with pytest.raises(PublishError, match="give the output signature or a probe"):
        Bare(repo_copy).publish("digits", "2.1.0", source, sample={"x": np.zeros((1, 64), np.float32)})
    assert "2.1.0" not in [str(v) for v in Bare(repo_copy).versions("digits")]


def test_publishing_with_an_output_signature_and_default_settings_runs_nothing(tmp_path: Path) -> None:
    """Given its outputs, a version publishes without running (files a probe could not
    load publish as before); settings the caller asks for are proved by running it."""
    from workbench.model.manifest import TensorSpec
    from workbench.model.repository import ModelRepository as Bare
    from workbench.model.runtime_settings import RuntimeSettings

    opened: list[RuntimeSettings] = []

    class Refusing:
        def open(self, files: object, settings: RuntimeSettings) -> object:
            opened.append(settings)
            raise PublishError("this probe loads nothing")

    source = tmp_path / "files"
    source.mkdir()
    (source / "inference.json").write_text("{}", encoding="utf-8")
    (source / "inference.pdiparams").write_bytes(b"\0" * 16)
    repo = Bare(tmp_path / "repo", probe=Refusing())  # type: ignore[arg-type]
    signature = {
        "sample": {"x": np.zeros((2, 4), np.float32)},
        "inputs": [TensorSpec("x", "float32", (-1, 4))],
        "outputs": [TensorSpec("y", "float32", (-1, 2))],
    }
    manifest = repo.publish("stub", "1.0.0", source, **signature)  # type: ignore[arg-type]
    assert manifest.outputs[0].name == "y" and opened == []
    with pytest.raises(PublishError, match="loads nothing"):
        repo.publish("stub", "1.1.0", source, runtime=RuntimeSettings.parse("onednn=off"), **signature)  # type: ignore[arg-type]
    assert len(opened) == 1 and "1.1.0" not in [str(v) for v in repo.versions("stub")]
