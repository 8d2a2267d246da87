"""Canaries of OCR pipeline versions with real nginx, real ``workbench serve`` instances, the
real PP-OCR exports and real client traffic of rendered images: the v4 pipeline's canary to
v5 is promoted, judged by CER against the labelled pages, and a pipeline whose recogniser
has a wrong character dictionary is rolled back by the task-aware rules — with no failed
client request in either.

Paddle OCR is slow on a small shared CPU (seconds per image for the v4 detector), so the
labelled set is three small pages, the client sends one image at a time, and the canary
has two steps. What is shared with ``bench/bench_ocr_canary.py`` (which measures the
figures: time to the verdict, client requests by version) is in :mod:`tests.deploy._ocr_canary`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests._wait import wait_until
from tests.codecs import _ocr
from tests.deploy._ocr_canary import (
    DEGRADED,
    PAGES,
    Clients,
    deployed,
    publish_repo,
    render_pages,
    results,
    serving_manager,
    spec,
)
from workbench.deploy import canary
from workbench.deploy.rollout.phases import Phase

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from workbench.deploy.manager import DeploymentManager

# minutes each on a loaded 2-core machine (seconds per image, and a replay every interval)
pytestmark = [pytest.mark.nginx, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def ocr_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ocr 4.0.0 and 5.0.0 (the real exports), and ocr 5.0.1 whose rec has a wrong dictionary."""
    _ocr.require_exports()
    _ocr.require_fonts()
    root = tmp_path_factory.mktemp("ocr-canary") / "repo"
    publish_repo(root)
    return root


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The labelled OCR set: rendered pages and the lines each holds (texts.json)."""
    return render_pages(tmp_path_factory.mktemp("ocr-pages"), len(PAGES))


@pytest.fixture(scope="module")
def manager(ocr_repo: Path) -> Iterator[DeploymentManager]:
    import shutil
    import tempfile
    from pathlib import Path

    from tests._components import require
    from tests.deploy.conftest import nginx_available

    require("nginx", nginx_available(), "install nginx (e.g. apt-get install nginx-light)")
    home = Path(tempfile.mkdtemp(prefix="wb-", dir="/tmp"))  # short: the router's socket path
    made = serving_manager(home, ocr_repo)
    yield made
    for name in made.names():
        made.delete(name)
    shutil.rmtree(home, ignore_errors=True)


def test_v4_to_v5_canary_is_promoted_on_cer(manager: DeploymentManager, pages: Path) -> None:
    web = deployed(manager, "4.0.0")
    with Clients(web.url, pages) as clients:
        # verification reads the sample pages on both pipelines (agreement reported, not gated:
        # v4 and v5 read differently — v4 drops spaces — and the canary judges by ground truth)
        web.update("5.0.0", sample_file=pages, min_agreement=0.0, timeout=900)
        assert web.phase is Phase.VERIFIED
        agreement = dict(web.state.agreement or {})
        assert agreement["task"] == "ocr" and agreement["rows"] == len(PAGES)
        assert agreement["score"]["metric"] == "cer" and agreement["score"]["value"] > 0
        status = canary.run(web, spec(pages, max_cer=0.5))
        # a few requests a minute, split at random during the canary: after the promotion
        # every one goes to 5.0.0
        if status.stage is Phase.PROMOTED:
            wait_until(lambda: clients.by_version("5.0.0") > 0, timeout=180)
    assert status.stage is Phase.PROMOTED, status.message
    assert web.phase is Phase.PROMOTED and web.state.weights[web.state.rollout.candidate] == 100
    assert clients.failed == 0 and clients.by_version("5.0.0") > 0, clients.counts()
    accuracy = results(web, "accuracy")
    assert accuracy and all(r["verdict"] == "pass" for r in accuracy)
    # v5 reads the pages better than v4: its CER is lower, so the change is "down"
    assert all(str(r["message"]).startswith("CER ") and "down" in str(r["message"])
               for r in accuracy), accuracy


def test_pipeline_with_a_wrong_dictionary_is_rolled_back_on_cer(
        manager: DeploymentManager, pages: Path) -> None:
    web = deployed(manager, "5.0.0")
    with Clients(web.url, pages) as clients:
        # let through on readiness alone: the canary analysis is what must catch it
        web.update(DEGRADED, checks=("ready",), timeout=900)
        status = canary.run(web, spec(pages, max_cer=0.05))
    assert status.stage is Phase.ROLLED_BACK, status.message
    assert status.weight == 50  # judged at the first step, never beyond it
    assert web.phase is Phase.ROLLED_BACK and web.state.candidate is None
    assert clients.failed == 0, clients.counts()
    last = web.history()[-1]
    assert last.action == "rollback" and last.outcome == "failed"
    failed = {r["rule"]: r for r in last.details["results"] if r["verdict"] == "fail"}
    assert "accuracy" in failed and "agreement" in failed, last.details["results"]
    assert str(failed["accuracy"]["message"]).startswith("CER ")
    assert "up" in str(failed["accuracy"]["message"]) and float(failed["accuracy"]["value"]) > 50
    assert "cer" in str(failed["agreement"]["message"])
