"""A signature binds a version to its model and version (real model-signing, real keys)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench import ModelRepository, RepositoryWatcher, VersionHub
from workbench.cli import app
from workbench.errors import IntegrityError, SignatureError
from workbench.model.manifest import MANIFEST_NAME, SIGNATURE_NAME
from workbench.model.signing import sign_directory


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A key pair made the way a user makes one: `workbench models keygen`."""
    private, public = tmp_path / "sign.pem", tmp_path / "sign.pub"
    result = CliRunner().invoke(app, ["models", "keygen", str(private), str(public)])
    assert result.exit_code == 0, result.output
    return private, public


@pytest.fixture
def root(demo_repo: Path, tmp_path: Path) -> Path:
    """A writable copy of the whole demo repository (digits and resnet)."""
    target = tmp_path / "repo"
    shutil.copytree(demo_repo, target, ignore=shutil.ignore_patterns(".complete"))
    return target


def _strip_identity(version_dir: Path) -> None:
    """Make the manifest look like one written before it named its model and version."""
    path = version_dir / MANIFEST_NAME
    data = json.loads(path.read_text())
    del data["model"], data["version"]
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize(
    ("source", "target", "names"),
    [
        (("digits", "1.2.0"), ("digits", "1.9.0"), r"digits:1\.9\.0 holds the manifest of digits:1\.2\.0"),
        (("resnet", "1.0.0"), ("digits", "2.0.0"), r"digits:2\.0\.0 holds the manifest of resnet:1\.0\.0"),
    ],
    ids=["other-version", "other-model"],
)
def test_a_signed_version_copied_elsewhere_is_refused(
    root: Path, keys: tuple[Path, Path], source: tuple[str, str], target: tuple[str, str], names: str
) -> None:
    private, public = keys
    repo = ModelRepository(root, verify_key=public)
    for model, version in [("digits", "1.2.0"), source]:
        repo.sign(model, version, private)
        repo.verify(model, version)
    hub = VersionHub(repo, "digits", device="cpu")
    hub.load("1.2.0")
    watcher = RepositoryWatcher(hub, interval=0.1, follow="latest")
    watcher.poll()

    shutil.copytree(root.joinpath(*source), root.joinpath(*target))  # signature and all
    with pytest.raises(IntegrityError, match=names):
        repo.verify(*target)
    with pytest.raises(IntegrityError, match=names):
        ModelRepository(root).manifest(*target)  # without a key too: loading checks it
    events = watcher.poll()
    assert [(e.kind, e.version) for e in events] == [("discovered", target[1]), ("load_failed", target[1])]
    assert "holds the manifest of" in events[-1].message
    assert str(hub.active.version) == "1.2.0"
    hub.close()


def test_old_unsigned_manifest_takes_the_directory_identity(root: Path) -> None:
    _strip_identity(root / "digits" / "1.1.0")
    repo = ModelRepository(root)
    manifest = repo.verify("digits", "1.1.0")
    assert (manifest.model, manifest.version) == ("digits", "1.1.0")
    hub = VersionHub(repo, "digits", device="cpu")
    assert str(hub.load("1.1.0").version) == "1.1.0"
    hub.close()


def test_old_signed_manifest_is_refused_until_signed_again(root: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    version_dir = root / "digits" / "1.1.0"
    _strip_identity(version_dir)
    sign_directory(version_dir, private)  # signed before manifests named their identity
    repo = ModelRepository(root, verify_key=public)
    with pytest.raises(SignatureError, match=r"digits:1\.1\.0: its signed manifest does not name"):
        repo.verify("digits", "1.1.0")
    assert ModelRepository(root).verify("digits", "1.1.0").version == "1.1.0"  # no key: loads

    repo.sign("digits", "1.1.0", private)  # records the identity, then signs
    data = json.loads((version_dir / MANIFEST_NAME).read_text())
    assert (data["model"], data["version"]) == ("digits", "1.1.0")
    assert (version_dir / SIGNATURE_NAME).is_file()
    assert repo.verify("digits", "1.1.0").model == "digits"
