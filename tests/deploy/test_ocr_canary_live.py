"""Canaries of OCR pipeline versions with real nginx, real ``workbench serve`` instances, the
real PP-OCR exports and real client traffic of rendered images: the v4 pipeline's canary to
v5 is promoted, judged by CER against the labelled pages, and a pipeline whose recogniser
has a wrong character dictionary is rolled back by the task-aware rules — with no failed
client request in either.

Paddle OCR is slow on a small shared CPU (seconds per image for the v4 detector), so the
labelled set is three small pages, the client sends one image at a time, and the canary
has two steps.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import httpx
import pytest

from tests._wait import wait_until
from tests.codecs import _ocr
from tests.serving._pipeline import publish_pipelines
from workbench.deploy import canary
from workbench.deploy.rollout.analysis import AccuracyRule, AgreementRule, AnalysisSpec
from workbench.deploy.rollout.phases import Phase

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from workbench.deploy.deployment import Deployment
    from workbench.deploy.manager import DeploymentManager

# minutes each on a loaded 2-core machine (seconds per image, and a replay every interval)
pytestmark = [pytest.mark.nginx, pytest.mark.slow, pytest.mark.timeout(1800)]
INFER = "/v2/models/ocr/infer"
#: The labelled pages: two lines each, small (the v4 detector scales the short side to 736).
PAGES = [["Invoice No. 48213", "Total: 1375.40 EUR"],
         ["The quick brown fox", "jumps over the lazy dog"],
         ["Paddle inference serving", "Blue green canary rollout"]]
#: The degraded pipeline: v5 det and cls, and the v5 recogniser with its dictionary shifted
#: by one (every character read as the next one in the table).
DEGRADED = "5.0.1"


@pytest.fixture(scope="module")
def ocr_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ocr 4.0.0 and 5.0.0 (the real exports), and ocr 5.0.1 whose rec has a wrong dictionary."""
    import shutil

    import yaml

    from workbench.model.runtime_settings import RuntimeSettings
    from workbench.runtime.paddle import PaddleProbe

    exports = _ocr.require_exports()
    _ocr.require_fonts()
    root = tmp_path_factory.mktemp("ocr-canary") / "repo"
    repo = publish_pipelines(root)
    # a copy of the v5 rec export whose inference.yml has its character table shifted by one
    wrong = root.parent / "v5-rec-wrong-dict"
    shutil.copytree(exports.v5_rec, wrong)
    config = yaml.safe_load((wrong / "inference.yml").read_text(encoding="utf-8"))
    table = config["PostProcess"]["character_dict"]
    config["PostProcess"]["character_dict"] = table[1:] + table[:1]
    (wrong / "inference.yml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                                         encoding="utf-8")
    repo.publish("ocr-rec", DEGRADED, wrong, probe=PaddleProbe(),
                 runtime=RuntimeSettings.parse("onednn=off"))
    repo.publish_pipeline("ocr", DEGRADED, {"det": "ocr-det:5.0.0", "cls": "ocr-cls:2.0.0",
                                            "rec": f"ocr-rec:{DEGRADED}"})
    return root


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The labelled OCR set: rendered pages and the lines each holds (texts.json)."""
    _ocr.require_fonts()
    folder = tmp_path_factory.mktemp("ocr-pages")
    texts = {}
    for index, lines in enumerate(PAGES):
        image, _ = _ocr.render_page(lines, _ocr.FONT_FILES[index % 2], size=20, width=320)
        name = f"page-{index}.png"
        (folder / name).write_bytes(_ocr.png(image))
        texts[name] = lines
    (folder / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def manager(ocr_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeploymentManager]:
    import shutil
    import tempfile
    from pathlib import Path

    from tests._components import require
    from tests.deploy.conftest import nginx_available
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.platforms.process.backend import ProcessBackend

    require("nginx", nginx_available(), "install nginx (e.g. apt-get install nginx-light)")
    home = Path(tempfile.mkdtemp(prefix="wb-", dir="/tmp"))  # short: the router's socket path

    # Each instance runs its stages in its own process (thread isolation): on a small shared
    # CPU, three stage worker processes per instance take minutes to start.
    wrapper = home / "serve_threads.py"
    wrapper.write_text("import os, sys\n"
                       "os.execv(sys.executable, [sys.executable, '-m', 'workbench', *sys.argv[1:], "
                       "'--isolation', 'thread'])\n")

    def factory(name: str, options: object) -> ProcessBackend:
        return ProcessBackend(home, command=[sys.executable, str(wrapper)],
                              env={"GLOG_minloglevel": "3"})

    made = DeploymentManager(home, repo=ocr_repo, backend_factory=factory)
    yield made
    for name in made.names():
        made.delete(name)
    shutil.rmtree(home, ignore_errors=True)


class Clients:
    """One client sending the pages through the router, one request after another; every
    answer's status and version counted."""

    def __init__(self, url: str, pages: Path) -> None:
        self.url = url
        self.images = [p.read_bytes() for p in sorted(pages.glob("*.png"))]
        self.answers: Counter[tuple[int, str]] = Counter()
        self._stop = threading.Event()
        self._sending = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Clients:
        self._thread.start()
        assert self._sending.wait(180), "the client never got a first answer"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(150)

    def _run(self) -> None:
        bodies = [{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                               "parameters": {"content_type": "base64"},
                               "data": [base64.b64encode(image).decode("ascii")]}]}
                  for image in self.images]
        sent = 0
        with httpx.Client(base_url=self.url, timeout=150) as client:
            while not self._stop.is_set():
                body = bodies[sent % len(bodies)]
                sent += 1
                try:
                    response = client.post(INFER, json=body)
                    key = (response.status_code, response.headers.get("x-model-version", "?"))
                except httpx.HTTPError:
                    key = (0, "?")
                self.answers[key] += 1
                self._sending.set()

    @property
    def failed(self) -> int:
        return sum(n for (status, _), n in self.answers.items() if status != 200)

    @property
    def total(self) -> int:
        return sum(self.answers.values())

    def by_version(self, version: str) -> int:
        return sum(n for (_, v), n in self.answers.items() if v == version)


def spec(pages: Path, *, max_cer: float) -> AnalysisSpec:
    """Two steps, judged on agreement with stable (CER of the pages read) and on CER
    against the labelled pages. Latency and errors are not judged: at seconds per image a
    client sends a few requests a minute, far too few for the sequential error-rate test
    to find its evidence within the test (a failing request would still reach no client:
    the router retries it on stable, which the zero-failures assertions check)."""
    rules = (AgreementRule(min_rows=len(PAGES), max_cer=max_cer), AccuracyRule(max_drop=5.0))
    # a busy instance may miss its 2-second metrics scrape: a missed read is inconclusive,
    # and many in a row must not pause the canary here
    return AnalysisSpec(steps=(50, 100), interval=2.0, max_inconclusive=50, max_failures=1000,
                        rules=rules, labelled=str(pages))


def deployed(manager: DeploymentManager, version: str) -> Deployment:
    """The ``ocr`` deployment with ``version`` stable (made when it is not there yet)."""
    if "ocr" in manager.names():
        web = manager.get("ocr")
        if web.state.stable_version == version and web.state.candidate is None:
            return web
        manager.delete("ocr")
    return manager.create("ocr", "ocr", version, timeout=900)


def results(web: Deployment, rule: str) -> list[dict[str, object]]:
    return [r for h in web.history() if "canary" in h.details
            for r in h.details.get("results", []) if r["rule"] == rule]


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
        started = time.monotonic()
        status = canary.run(web, spec(pages, max_cer=0.5))
        seconds = time.monotonic() - started
        # a few requests a minute, split at random during the canary: after the promotion
        # every one goes to 5.0.0
        if status.stage is Phase.PROMOTED:
            wait_until(lambda: clients.by_version("5.0.0") > 0, timeout=180)
    print(f"\nv4 -> v5: {status.stage.value} in {seconds:.1f} s; client requests {clients.total} "
          f"({dict(clients.answers)}), failed {clients.failed}")
    assert status.stage is Phase.PROMOTED, status.message
    assert web.phase is Phase.PROMOTED and web.state.weights[web.state.rollout.candidate] == 100
    assert clients.failed == 0 and clients.by_version("5.0.0") > 0
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
        started = time.monotonic()
        status = canary.run(web, spec(pages, max_cer=0.05))
        seconds = time.monotonic() - started
    print(f"\n5.0.0 -> {DEGRADED}: {status.stage.value} in {seconds:.1f} s; client requests "
          f"{clients.total} ({dict(clients.answers)}), failed {clients.failed}")
    assert status.stage is Phase.ROLLED_BACK, status.message
    assert status.weight == 50  # judged at the first step, never beyond it
    assert web.phase is Phase.ROLLED_BACK and web.state.candidate is None
    assert clients.failed == 0
    last = web.history()[-1]
    assert last.action == "rollback" and last.outcome == "failed"
    failed = {r["rule"]: r for r in last.details["results"] if r["verdict"] == "fail"}
    assert "accuracy" in failed and "agreement" in failed, last.details["results"]
    assert str(failed["accuracy"]["message"]).startswith("CER ")
    assert "up" in str(failed["accuracy"]["message"]) and float(failed["accuracy"]["value"]) > 50
    assert "cer" in str(failed["agreement"]["message"])
