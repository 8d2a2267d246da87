"""`workbench lab` in a real browser: JupyterLab on loopback, headless Chromium, the quickstart run.

Starts ``workbench lab`` (private profile, token auth, 127.0.0.1) on a copy of the
quickstart, opens it in Debian's Chromium through Playwright (never a downloaded
browser), runs all cells, and checks that the version panel and the Bokeh figures
rendered as widgets rather than error boxes; then presses a panel button in the
page and watches the kernel's state come back. Screenshots go to artifacts/browser/.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests._components import require
from tests._wait import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_TIMEOUT_MS = 300_000
BOKEHJS = "Copyright (c) Anaconda, Inc., and Bokeh Contributors"  # the library's header

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _playwright_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def lab(demo_repo: Path) -> Iterator[dict[str, Any]]:
    """`workbench lab` on a free loopback port over a copy of the quickstart; stopped afterwards."""
    require(
        "chromium",
        CHROMIUM.exists() and _playwright_available(),
        "apt-get install chromium (and the playwright Python package)",
    )
    workdir = Path(tempfile.mkdtemp(prefix="wb-lab-", dir="/tmp"))
    notebooks = workdir / "notebooks"
    notebooks.mkdir()
    shutil.copy2(ROOT / "notebooks" / "01-quickstart.ipynb", notebooks)
    port = _free_port()
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        "WORKBENCH_HOME": str(workdir / "home"),
        "WORKBENCH_REPO": str(demo_repo),
        "JUPYTER_TOKEN": token,
    }
    log = (workdir / "lab.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench",
            "lab",
            "--port",
            str(port),
            "--notebook-dir",
            str(notebooks),
            "--no-demo",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"workbench lab exited: {(workdir / 'lab.log').read_text()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
            return r.status == 200

    try:
        wait_until(up, 120, 0.5, what="JupyterLab to answer", ignore=(OSError,))
        yield {
            "url": f"http://127.0.0.1:{port}",
            "token": token,
            "log": workdir / "lab.log",
            "notebooks": notebooks,
            "env": env,
        }
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the lab and the kernels it started
            process.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()
        shutil.copy2(workdir / "lab.log", _artifacts() / "lab.log")
        shutil.rmtree(workdir, ignore_errors=True)


def _artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _button(panel: Any, label: str) -> Any:
    return panel.locator("button.widget-button").filter(has_text=re.compile(rf"^\s*{label}\s*$"))


def _run_all(page: Any) -> None:
    """Clear the saved outputs, then Run > Run All Cells once the kernel is idle (retried if needed).

    The tutorials are saved executed: without clearing, the closing line of the last run
    would already be on the page.
    """
    page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')", timeout=120_000)
    page.click(".lm-MenuBar-itemLabel:text-is('Edit')")
    page.click(".lm-Menu-itemLabel:text-is('Clear Outputs of All Cells')")
    page.wait_for_function("() => document.querySelectorAll('.jp-OutputArea-output').length === 0")
    started = (
        "() => Array.from(document.querySelectorAll('.jp-InputArea-prompt'))"
        ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"
    )
    for _ in range(4):
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        try:
            page.wait_for_function(started, timeout=15_000)
            return
        except Exception:
            continue
    raise AssertionError("Run All Cells did not start the notebook")


@contextmanager
def _run_notebook(lab: dict[str, Any], name: str, done: str, errors: list[str]) -> Iterator[Any]:
    """Open ``name`` in Chromium at 1400x1000, run all cells until an output shows ``done``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{lab['url']}/lab/tree/{name}?token={lab['token']}")
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            _run_all(page)
            try:
                page.wait_for_selector(f".jp-OutputArea-output:has-text('{done}')", timeout=RUN_TIMEOUT_MS)
            finally:
                page.screenshot(path=str(_artifacts() / f"{Path(name).stem}-end.png"))
            yield page
        finally:
            browser.close()


def test_quickstart_renders_the_version_panel_and_bokeh_figures(lab: dict[str, Any]) -> None:
    console_errors: list[str] = []
    with _run_notebook(lab, "01-quickstart.ipynb", "QUICKSTART OK", console_errors) as page:
        panel = page.locator(".workbench-versions-panel")
        assert panel.count() == 1
        panel.scroll_into_view_if_needed()
        time.sleep(1)  # let Bokeh paint
        page.screenshot(path=str(_artifacts() / "quickstart-version-panel.png"))
        panel.screenshot(path=str(_artifacts() / "version-panel.png"))

        # the widgets rendered: the panel's tables and buttons, not an error box
        assert "active: 1.0.0" in panel.inner_text()
        for label in ("Load", "Unload", "Use", "Rollback"):
            assert _button(panel, label).count() == 1, label
        assert page.locator(".jupyter-widgets-error-widget").count() == 0
        assert page.get_by_text("Error displaying widget").count() == 0
        tracebacks = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        )
        assert not any("Traceback" in t for t in tracebacks.all_inner_texts())

        # Bokeh drew: the panel's memory chart and the standalone latency figure have canvases
        assert panel.locator(".bk-Figure").count() >= 1
        assert panel.locator("canvas").count() >= 1
        assert page.locator(".bk-Figure").count() >= 2
        assert not any("BokehView" in e or "Could not create a view" in e for e in console_errors), (
            console_errors
        )

        # a click in the page goes through the kernel and redraws the panel
        panel.locator("select").first.select_option("1.1.0")
        _button(panel, "Use").click()
        page.wait_for_function(
            "() => document.querySelector('.workbench-versions-panel')"
            ".innerText.includes('active: 1.1.0')",
            timeout=30_000,
        )
        panel.screenshot(path=str(_artifacts() / "version-panel-after-use.png"))

        # saved from the browser, the notebook stays small: BokehJS came from the server
        page.keyboard.press("Control+s")
        saved = lab["notebooks"] / "01-quickstart.ipynb"
        wait_until(lambda: "QUICKSTART OK" in saved.read_text(), 30, what="Lab to save the notebook")
        assert saved.stat().st_size < 500_000, saved.stat().st_size
        assert BOKEHJS not in saved.read_text()


DEPLOY_NOTEBOOK = [
    "%paddle deploy create bw digits@stable -q\n%paddle deploy update bw 1.1.0 -q\n%paddle deploy weight bw 25",
    "panel = %paddle panel deploy bw\npanel",
    (
        "import time\n"
        "from workbench.deploy.client import ServingClient\n"
        "from workbench.model.demo import digits_dataset\n"
        "x = digits_dataset()[2][:4]\n"
        "url = panel.deployment.url\n"
        "with ServingClient(url, timeout=30) as client:\n"
        "    end = time.monotonic() + 14\n"
        "    while time.monotonic() < end:\n"
        "        client.infer('digits', {'x': x})\n"
        "        time.sleep(0.02)\n"
        "print('DEPLOY PANEL OK')"
    ),
]


def test_deploy_panel_fits_the_page_with_readable_figures(lab: dict[str, Any]) -> None:
    """At 1400 px the three live figures fit in the panel (wrapping if needed), health stays known."""
    import nbformat

    require(
        "nginx",
        shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None,
        "the router is nginx (apt-get install nginx-light)",
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in DEPLOY_NOTEBOOK])
    nbformat.write(notebook, lab["notebooks"] / "deploy-panel.ipynb")
    try:
        with _run_notebook(lab, "deploy-panel.ipynb", "DEPLOY PANEL OK", []) as page:
            panel = page.locator(".workbench-deploy-panel")
            assert panel.count() == 1
            panel.scroll_into_view_if_needed()
            time.sleep(4)  # a few more live points, and let Bokeh paint
            panel.screenshot(path=str(_artifacts() / "deploy-panel.png"))

            box = panel.bounding_box()
            figures = panel.locator(".bk-Figure")
            assert figures.count() == 3
            for index in range(3):
                figure = figures.nth(index).bounding_box()
                assert figure is not None and box is not None
                # the whole figure is inside the panel: nothing cut at the right edge
                assert figure["x"] + figure["width"] <= box["x"] + box["width"] + 1, (figure, box)
                assert figure["width"] >= 250
            assert "phase" in panel.inner_text() and "?" not in panel.locator("table").first.inner_text()
            # buttons follow the phase (canary): every action works there
            for label in ("Set weight", "Promote", "Rollback", "Abort", "Switch"):
                assert _button(panel, label).is_enabled(), label
            assert page.locator(".jupyter-widgets-error-widget").count() == 0
    finally:
        deleted = subprocess.run(
            [sys.executable, "-m", "workbench", "deploy", "delete", "bw", "--yes"],
            env=lab["env"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        # nothing of the deployment outlives the test (its instances run detached)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr


PANELS_NOTEBOOK = [
    (
        "from workbench.model.demo import digits_dataset\n"
        "_, _, x_test, y_test = digits_dataset()\n"
        "%paddle load digits@stable digits@canary -q"
    ),
    "panel = %paddle panel versions digits\npanel",
    (
        "r = %paddle compare digits:1.0.0 digits:1.1.0 --data x_test --labels y_test --batch-size 64 -q\n"
        "compare = %paddle panel compare digits\n"
        "compare.show(r)\n"
        "compare"
    ),
    "print('PANELS OK')",
]

#: Does an element (and every table in it) fit its width, or does it scroll sideways?
FITS = """el => ({
    scroll: el.scrollWidth, client: el.clientWidth,
    output: el.closest('.jp-OutputArea-output').scrollWidth,
    outputClient: el.closest('.jp-OutputArea-output').clientWidth,
    tables: Array.from(el.querySelectorAll('table')).map(t => {
        const box = t.parentElement;
        return {table: t.offsetWidth, scroll: box.scrollWidth, client: box.clientWidth};
    }),
})"""


def test_panels_fit_at_1400_px_and_say_what_they_measure(lab: dict[str, Any], tmp_path: Path) -> None:
    """The versions and compare panels at 1400 px: no sideways scrolling; the form matches the result."""
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in PANELS_NOTEBOOK])
    nbformat.write(notebook, lab["notebooks"] / "panels.ipynb")
    shots = Path(tempfile.mkdtemp(prefix="wb-panels-", dir="/tmp"))
    with _run_notebook(lab, "panels.ipynb", "PANELS OK", []) as page:
        for selector, name in ((".workbench-versions-panel", "versions"), (".workbench-compare-panel", "compare")):
            panel = page.locator(selector)
            assert panel.count() == 1, selector
            panel.scroll_into_view_if_needed()
            time.sleep(1)  # let Bokeh paint
            shot = shots / f"{name}-panel-1400.png"
            panel.screenshot(path=str(shot))
            print(f"{name} panel at 1400 px: {shot}")
            fit = panel.evaluate(FITS)
            assert fit["scroll"] <= fit["client"], (name, fit)
            assert fit["output"] <= fit["outputClient"], (name, fit)
            assert fit["tables"], (name, fit)
            for table in fit["tables"]:
                assert table["scroll"] <= table["client"], (name, table)

        versions = page.locator(".workbench-versions-panel")
        text = versions.inner_text()
        for column in ("served", "failed", "p99 ms", "RSS MiB"):
            assert column in text, column
        assert "in kernel" in text  # no memory of its own to chart for an in-kernel version
        assert versions.locator(".bk-Figure").count() == 1

        compare = page.locator(".workbench-compare-panel")
        batch = compare.locator(".widget-text input").first.input_value()
        assert batch == "64" and "batch 64" in compare.inner_text(), batch
        assert page.locator(".jupyter-widgets-error-widget").count() == 0
