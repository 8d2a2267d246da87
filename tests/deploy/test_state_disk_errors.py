"""Saving a deployment's state on a full disk (ENOSPC) or in a home the user may not write
(EACCES): the CLI says so in one sentence naming the directory and what to do, no
traceback, and the old state stays whole with no temp file left.

The error is injected where the state's temp file is written (in
:func:`workbench._fs.write_atomic`, after a partial write), so the real error path
runs; a read-only directory cannot make EACCES here, the tests run as root.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_cli_deploy import env, run  # noqa: F401 - the stub CLI's env fixture
from workbench.cli import main
from workbench.errors import StateError

ERRORS = {"ENOSPC": (errno.ENOSPC, "free some space there and try again"),
          "EACCES": (errno.EACCES, "make it writable for this user")}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _state_write_fails(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Every write of a deployment state's temp file fails with ``code``."""
    real = Path.write_bytes

    def write_bytes(self: Path, data: Any) -> int:
        if self.name.startswith(".state.json-"):
            self.write_text("{\"half\": ")  # a partial write, then the error
            raise OSError(code, os.strerror(code), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("name", ERRORS)
def test_a_state_write_on_a_full_or_closed_disk_is_one_sentence_and_leaves_the_state(
    nginx: None, env: dict[str, str], home: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str,
) -> None:
    code, advice = ERRORS[name]
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    directory = home / "deployments" / "web"
    before = (directory / "state.json").read_bytes()
    files = _files(directory)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _state_write_fails(monkeypatch, code)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "history", "web"])  # reads only: unaffected
    assert exited.value.code in (0, None)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "abort", "web", "--reason", "x"])  # refused: recorded in the history
    err = capsys.readouterr().err
    assert exited.value.code == StateError.exit_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: cannot write the state of deployment 'web' in {directory}: "
                               f"{os.strerror(code)}; "), err
    assert advice in lines[0] and "Traceback" not in err
    assert (directory / "state.json").read_bytes() == before  # the old state, whole
    # no temp file left; the copy of the previous state kept on each write is the old state
    assert sorted({*_files(directory), "state.json.prev"}) == sorted({*files, "state.json.prev"})
    assert (directory / "state.json.prev").read_bytes() == before
    json.loads(before)
