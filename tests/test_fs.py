"""write_atomic and atomic_path: one step from the old file to the new one, nothing left behind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from workbench._fs import atomic_path, write_atomic

if TYPE_CHECKING:
    from pathlib import Path


def test_replaces_the_file_with_the_given_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    write_atomic(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert target.stat().st_mode & 0o777 == 0o600
    write_atomic(target, b"\x00bytes", mode=0o644)
    assert target.read_bytes() == b"\x00bytes"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "table.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_atomic_path_installs_what_a_path_writer_wrote_after_its_check(tmp_path: Path) -> None:
    target = tmp_path / "nginx.conf"
    target.write_text("old")
    with atomic_path(target, mode=0o640) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.exists()
        tmp.write_text("new")  # as a library given a path would
        assert target.read_text() == "old"  # nothing changes before the block ends
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["nginx.conf"]


def test_atomic_path_keeps_the_old_file_when_the_check_fails(tmp_path: Path) -> None:
    target = tmp_path / "nginx.conf"
    target.write_text("old")
    with pytest.raises(ValueError, match="check failed"), atomic_path(target) as tmp:
        tmp.write_text("bad")
        raise ValueError("check failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["nginx.conf"]


def test_atomic_path_can_keep_its_temp_file_out_of_the_target_directory(tmp_path: Path) -> None:
    """Signing hashes the target's directory: its temp file must wait elsewhere."""
    version_dir = tmp_path / "1.0.0"
    version_dir.mkdir()
    with atomic_path(version_dir / "model.sig", tmp_dir=tmp_path) as tmp:
        assert tmp.parent == tmp_path
        assert list(version_dir.iterdir()) == []
        tmp.write_bytes(b"signature")
    assert [p.name for p in version_dir.iterdir()] == ["model.sig"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.0.0"]
