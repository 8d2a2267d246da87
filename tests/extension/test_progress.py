"""Progress bars in each frontend: a terminal IPython, a captured stream, a Jupyter kernel (nbclient)."""

from __future__ import annotations

import os
import select
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parents[2]

WORK = """
import time
from workbench_ext.progress import run_with_progress
state = {"done": 0}
def work():
    for _ in range(2):
        time.sleep(0.9)
        state["done"] += 1
run_with_progress(work, desc="update demo", steps=["start green", "wait until ready"],
                  done=lambda: state["done"], interval=0.1)
"""


def test_a_captured_stream_gets_one_line_per_change_and_the_final_state(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from workbench_ext.progress import frontend

    shell = InteractiveShell.instance()  # a real shell, no kernel: not a widget frontend
    assert frontend() == "lines"
    result = shell.run_cell(WORK, store_history=False)
    result.raise_error()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "\r" not in err
    assert len(lines) == len(set(lines)), lines  # never the same line twice
    assert len(lines) <= 5, lines  # 0/2, 1/2, 2/2 (and "done"): not one per redraw
    assert any("update demo: 0/2 steps" in line and "start green" in line for line in lines)
    assert any("update demo: 1/2 steps" in line and "wait until ready" in line for line in lines)
    assert "update demo: 2/2 steps" in lines[-1]


def _in_a_terminal(code: str, columns: int = 60, timeout: float = 120) -> str:
    """Run terminal IPython on a pseudo-terminal ``columns`` wide; what the terminal received."""
    import fcntl
    import pty
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: IPython on the terminal
        argv = [sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor", "--quick", "-c", code]
        os.execve(sys.executable, argv, {**os.environ, "GLOG_minloglevel": "3"})
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    return received.decode(errors="replace")


def test_terminal_ipython_redraws_one_line_within_the_width() -> None:
    columns = 60
    out = _in_a_terminal(WORK + "\nprint('END')\n", columns)
    assert "END" in out, out[-2000:]
    bar = out[out.index("update demo") - 1 : out.index("END")]
    # every redraw goes back to the start of the same line (\r), none wraps onto a new one
    assert bar.count("\n") == 1, repr(bar)
    drawn = [part for part in bar.replace("\n", "").split("\r") if part.strip()]
    assert drawn and all(len(part) <= columns for part in drawn), [len(p) for p in drawn]
    assert "2/2" in drawn[-1]


def test_a_kernel_saves_the_bar_in_its_final_state(tmp_path: Path) -> None:
    """nbclient (what nbconvert runs): the saved text of the widget bar is 2/2, never 0/2."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("%load_ext workbench_ext\n" + WORK + "\nprint('DONE')")]
    )
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs: list[dict[str, Any]] = notebook.cells[0].outputs
    assert not [o for o in outputs if o["output_type"] == "error"], outputs
    bars = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(bars) == 1, outputs
    text = bars[0]["data"]["text/plain"]
    assert "update demo: 2/2 steps" in text and "0/2" not in text, text
    assert not any("0/2" in o.get("text", "") for o in outputs)


def test_load_ext_when_auto_loaded_says_nothing(tmp_path: Path) -> None:
    """A kernel whose profile loads the extension: `%load_ext workbench_ext` prints no "already loaded"."""
    import nbformat
    from nbclient import NotebookClient

    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        (ROOT / "extension" / "ipython_kernel_config.py").read_text()
    )
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("%load_ext workbench_ext\n%load_ext workbench_ext\nprint('OK')")]
    )
    env_before = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(tmp_path / "ipython")
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    finally:
        if env_before is None:
            os.environ.pop("IPYTHONDIR", None)
        else:
            os.environ["IPYTHONDIR"] = env_before
    outputs = notebook.cells[0].outputs
    assert [o.get("text") for o in outputs] == ["OK\n"], outputs

