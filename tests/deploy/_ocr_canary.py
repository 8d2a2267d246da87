"""OCR pipeline canaries on the real exports: the repository, the labelled pages, the
deployments, the background client and the analysis spec.

Shared by ``tests/deploy/test_ocr_canary_live.py`` and ``bench/bench_ocr_canary.py``. The
repository holds the ``ocr`` pipelines 4.0.0 and 5.0.0 of :mod:`tests.serving._pipeline`
and :data:`DEGRADED`, the v5 pipeline whose recogniser reads with its character table
shifted by one. Instances are real ``workbench serve`` processes (each running its stages
in threads) behind real nginx; the client sends rendered pages through the router one
request after another and counts every answer's status and version.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import httpx
import yaml

from tests.codecs import _ocr
from tests.serving._pipeline import publish_pipelines
from workbench.deploy.manager import DeploymentManager
from workbench.deploy.platforms.process.backend import ProcessBackend
from workbench.deploy.rollout.analysis import AccuracyRule, AgreementRule, AnalysisSpec
from workbench.model.runtime_settings import RuntimeSettings

if TYPE_CHECKING:
    from pathlib import Path

    from workbench.deploy.deployment import Deployment
    from workbench.model.repository import ModelRepository

INFER = "/v2/models/ocr/infer"
#: The labelled pages: two lines each, small (the v4 detector scales the short side to 736).
PAGES = [["Invoice No. 48213", "Total: 1375.40 EUR"],
         ["The quick brown fox", "jumps over the lazy dog"],
         ["Paddle inference serving", "Blue green canary rollout"]]
#: The degraded pipeline: v5 det and cls, and the v5 recogniser with its dictionary shifted
#: by one (every character read as the next one in the table).
DEGRADED = "5.0.1"


def publish_repo(root: Path) -> ModelRepository:
    """ocr 4.0.0 and 5.0.0 (the real exports) in ``root``, and ocr :data:`DEGRADED`, whose
    rec is a copy of the v5 rec export with its character table shifted by one (the copy
    is made beside ``root``)."""
    from workbench.runtime.paddle import PaddleProbe

    exports = _ocr.require_exports()
    repo = publish_pipelines(root)
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
    return repo


def page_lines(count: int) -> list[list[str]]:
    """The lines of ``count`` labelled pages: :data:`PAGES`, then pairs of the test lines."""
    lines = _ocr.LINES
    more = [[lines[(2 * i) % len(lines)], lines[(2 * i + 1) % len(lines)]]
            for i in range(max(0, count - len(PAGES)))]
    return [*PAGES, *more][:count]


def render_pages(folder: Path, count: int = len(PAGES)) -> Path:
    """``folder`` with ``count`` rendered pages (PNG, DejaVu Sans and Serif in turn) and the
    lines each holds (``texts.json``): the labelled set."""
    _ocr.require_fonts()
    folder.mkdir(parents=True, exist_ok=True)
    texts = {}
    for index, lines in enumerate(page_lines(count)):
        image, _ = _ocr.render_page(lines, _ocr.FONT_FILES[index % 2], size=20, width=320)
        name = f"page-{index}.png"
        (folder / name).write_bytes(_ocr.png(image))
        texts[name] = lines
    (folder / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    return folder


def serving_manager(home: Path, repo: Path) -> DeploymentManager:
    """A manager in ``home`` (keep its path short: the router's socket lives there) whose
    instances are ``workbench serve`` processes running their stages in threads."""
    # Each instance runs its stages in its own process (thread isolation): on a small shared
    # CPU, three stage worker processes per instance take minutes to start.
    wrapper = home / "serve_threads.py"
    wrapper.write_text("import os, sys\n"
                       "os.execv(sys.executable, [sys.executable, '-m', 'workbench', *sys.argv[1:], "
                       "'--isolation', 'thread'])\n")

    def factory(name: str, options: object) -> ProcessBackend:
        return ProcessBackend(home, command=[sys.executable, str(wrapper)],
                              env={"GLOG_minloglevel": "3"})

    return DeploymentManager(home, repo=repo, backend_factory=factory)


class Clients:
    """One client sending the pages through the router, one request after another; every
    answer's status and version counted. ``limit`` bounds it in seconds and ``budget`` in
    requests (unbounded when None: it runs until the ``with`` block ends)."""

    def __init__(self, url: str, pages: Path, *, limit: float | None = None,
                 budget: int | None = None) -> None:
        self.url = url
        self.images = [p.read_bytes() for p in sorted(pages.glob("*.png"))]
        self.answers: Counter[tuple[int, str]] = Counter()
        self.limit, self.budget = limit, budget
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sending = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Clients:
        self._thread.start()
        if not self._sending.wait(180):
            self.__exit__()
            raise TimeoutError("the client never got a first answer")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(150)

    def _run(self) -> None:
        bodies = [{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                               "parameters": {"content_type": "base64"},
                               "data": [base64.b64encode(image).decode("ascii")]}]}
                  for image in self.images]
        deadline = None if self.limit is None else time.monotonic() + self.limit
        sent = 0
        with httpx.Client(base_url=self.url, timeout=150) as client:
            while not self._stop.is_set():
                if (deadline is not None and time.monotonic() > deadline) or \
                        (self.budget is not None and sent >= self.budget):
                    return
                body = bodies[sent % len(bodies)]
                sent += 1
                try:
                    response = client.post(INFER, json=body)
                    key = (response.status_code, response.headers.get("x-model-version", "?"))
                except httpx.HTTPError:
                    key = (0, "?")
                with self._lock:
                    self.answers[key] += 1
                self._sending.set()

    def counts(self) -> dict[tuple[int, str], int]:
        """(status, version) -> answers so far (0 for a request that got no answer)."""
        with self._lock:
            return dict(self.answers)

    @property
    def failed(self) -> int:
        return sum(n for (status, _), n in self.counts().items() if status != 200)

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def by_version(self, version: str) -> int:
        return sum(n for (_, v), n in self.counts().items() if v == version)


def spec(pages: Path, *, max_cer: float, interval: float = 2.0) -> AnalysisSpec:
    """Two steps, judged on agreement with stable (CER of the pages read) and on CER
    against the labelled pages. Latency and errors are not judged: at seconds per image a
    client sends a few requests a minute, far too few for the sequential error-rate test
    to find its evidence within the test (a failing request would still reach no client:
    the router retries it on stable, which the zero-failures assertions check)."""
    rows = len(list(pages.glob("*.png")))
    rules = (AgreementRule(min_rows=rows, max_cer=max_cer), AccuracyRule(max_drop=5.0))
    # a busy instance may miss its 2-second metrics scrape: a missed read is inconclusive,
    # and many in a row must not pause the canary here
    return AnalysisSpec(steps=(50, 100), interval=interval, max_inconclusive=50,
                        max_failures=1000, rules=rules, labelled=str(pages))


def deployed(manager: DeploymentManager, version: str) -> Deployment:
    """The ``ocr`` deployment with ``version`` stable (made when it is not there yet)."""
    if "ocr" in manager.names():
        web = manager.get("ocr")
        if web.state.stable_version == version and web.state.candidate is None:
            return web
        manager.delete("ocr")
    return manager.create("ocr", "ocr", version, timeout=900)


def results(web: Deployment, rule: str) -> list[dict[str, object]]:
    """Every canary result of ``rule`` in ``web``'s history, oldest first."""
    return [r for h in web.history() if "canary" in h.details
            for r in h.details.get("results", []) if r["rule"] == rule]
