"""Canaries of the demo digits model with real nginx, real ``workbench serve`` instances and
real client traffic: a good version is promoted through every step, a degraded one and a
failing one are rolled back — with no failed client request — and a quiet canary holds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.deploy.test_replay import labelled  # noqa: F401 - the labelled-set fixture
from tests.serving.conftest import json_infer_body
from workbench.deploy import canary
from workbench.deploy.rollout.analysis import (
    AgreementRule,
    AnalysisSpec,
    ErrorRateRule,
    LatencyRule,
)
from workbench.deploy.rollout.controller import Stage
from workbench.deploy.rollout.phases import Phase

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from workbench.deploy.deployment import Deployment
    from workbench.deploy.manager import DeploymentManager

pytestmark = [pytest.mark.nginx, pytest.mark.slow]
INFER = "/v2/models/digits/infer"
FAULTY = "1.1.0"  # with the faulty backend, this version answers 500 to every inference


class Clients:
    """Client traffic through the router: every answer's status and version, counted."""

    def __init__(self, url: str, rate: float = 40.0) -> None:
        self.url, self.rate = url, rate
        self.answers: Counter[tuple[int, str]] = Counter()
        self._stop = threading.Event()
        self._sending = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Clients:
        # Traffic flows before the block starts: loading the digits takes a second or two,
        # and a canary's first interval must not pass in silence.
        self._thread.start()
        assert self._sending.wait(60), "the clients never got a first answer"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        # Real digits, one row a request: what the stable instance's reservoir keeps and
        # the agreement rule replays when no labelled set is given.
        from workbench.model.demo import digits_dataset

        _, _, x_test, _ = digits_dataset()
        bodies = [json_infer_body(x_test[i : i + 1]) for i in range(len(x_test))]
        sent = 0
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.wait(1 / self.rate):
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

    def by_version(self, version: str) -> int:
        return sum(n for (_, v), n in self.answers.items() if v == version)


@pytest.fixture
def manager(nginx: None, demo_repo: Path, home: Path) -> Iterator[DeploymentManager]:
    """A manager whose instances of version FAULTY get the faults in $WB_TEST_FAULTS
    (e.g. ``workbench serve --fault-error-rate 1 --fault-version 1.1.0``)."""
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.platforms.process.backend import ProcessBackend

    wrapper = home / "faulty_serve.py"
    wrapper.write_text(
        "import os, sys\n"
        f"args = [sys.executable, '-m', 'workbench', *sys.argv[1:]]\n"
        "faults = os.environ.get('WB_TEST_FAULTS', '').split()\n"
        f"if faults:\n"
        f"    args += [*faults, '--fault-version', {FAULTY!r}]\n"
        "os.execv(sys.executable, args)\n"
    )

    def factory(name: str, options: object) -> ProcessBackend:
        return ProcessBackend(home, command=[sys.executable, str(wrapper)])

    made = DeploymentManager(home, repo=demo_repo, backend_factory=factory)
    yield made
    for name in made.names():
        made.delete(name)


def spec(labelled_set: Path | None = None, **kw: object) -> AnalysisSpec:
    rules = (ErrorRateRule(min_requests=10), LatencyRule(min_requests=10),
             AgreementRule(min_rows=32))
    base = AnalysisSpec(steps=(25, 50, 100), interval=1.5, max_inconclusive=8, rules=rules,
                        labelled=None if labelled_set is None else str(labelled_set))
    from dataclasses import replace

    return replace(base, **kw)  # type: ignore[arg-type]


def updated(manager: DeploymentManager, version: str, checks: tuple[str, ...] = ("ready",
            "deep_health", "agreement")) -> Deployment:
    web = manager.get("digits") if "digits" in manager.names() else manager.create(
        "digits", "digits", "1.0.0", timeout=300)
    web.update(version, timeout=300, checks=checks)
    assert web.phase is Phase.VERIFIED
    return web


def test_good_version_is_promoted_through_every_step(manager: DeploymentManager,
                                                      labelled: Path) -> None:  # noqa: F811
    web = updated(manager, "1.1.0")
    weights: list[int] = []
    with Clients(web.url) as clients:
        status = canary.run(web, spec(labelled),
                            on_tick=lambda s, a: weights.append(a.weight) if a.weight else None)
    assert status.stage is Phase.PROMOTED, status.message
    assert weights == [25, 50, 100]
    assert web.phase is Phase.PROMOTED and web.state.weights[web.state.rollout.candidate] == 100
    assert clients.failed == 0 and clients.by_version("1.1.0") > 0
    ticks = [h for h in web.history() if "canary" in h.details and h.details.get("results")]
    assert ticks and all("threshold" in r for h in ticks for r in h.details["results"])


def test_degraded_version_is_rolled_back_on_a_replay_of_live_inputs(
        manager: DeploymentManager) -> None:
    """No labelled set: the controller replays the stable instance's reservoir of recent
    request inputs to both colours (read with the deployment's admin token)."""
    web = updated(manager, "1.2.0", checks=("ready",))
    with Clients(web.url) as clients:
        time.sleep(3)  # stable's reservoir fills with live requests first
        status = canary.run(web, spec())
    assert status.stage is Phase.ROLLED_BACK, status.message
    assert "agreement" in status.message
    assert clients.failed == 0
    (tick,) = [h for h in web.history() if "canary" in h.details and h.outcome == "failed"]
    (agreement,) = [r for r in tick.details["results"] if r["rule"] == "agreement"]
    assert agreement["verdict"] == "fail" and agreement["value"] < 0.85


def test_degraded_version_is_rolled_back_by_the_agreement_rule(manager: DeploymentManager,
                                                                labelled: Path) -> None:  # noqa: F811
    # verification at deploy time would refuse 1.2.0 already (agreement below 85%): let it
    # through on readiness alone so the canary analysis is what catches it
    web = updated(manager, "1.2.0", checks=("ready",))
    with Clients(web.url) as clients:
        status = canary.run(web, spec(labelled))
    assert status.stage is Phase.ROLLED_BACK
    assert "agreement" in status.message and "min 80%" in status.message
    assert status.weight == 25  # judged at the first step, never beyond it
    assert web.phase is Phase.ROLLED_BACK and web.state.candidate is None
    assert clients.failed == 0
    last = web.history()[-1]
    assert last.action == "rollback" and last.outcome == "failed" and last.by == "controller"
    assert any(r["rule"] == "agreement" and r["verdict"] == "fail"
               for r in last.details["results"])


def test_failing_version_is_rolled_back_by_error_rate_without_client_failures(
    manager: DeploymentManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WB_TEST_FAULTS", "--fault-error-rate 1")
    # only readiness is verified: the faults show under traffic, as a real regression would
    web = updated(manager, FAULTY, checks=("ready",))
    # Judged on live traffic alone (a replay the candidate fails is missing evidence for
    # agreement, never a verdict): 25% of 40 requests/s makes about 12 candidate requests
    # an interval.
    rules = (ErrorRateRule(min_requests=5), LatencyRule(min_requests=10))
    with Clients(web.url) as clients:
        status = canary.run(web, spec(rules=rules))
    assert status.stage is Phase.ROLLED_BACK
    assert status.message.startswith("rule error_rate failed: 100.0%")
    assert status.ticks <= 2
    assert clients.failed == 0  # the router retried every candidate 500 on stable
    assert web.phase is Phase.ROLLED_BACK


def test_slow_version_is_rolled_back_by_the_latency_rule_without_client_failures(
    manager: DeploymentManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WB_TEST_FAULTS", "--fault-latency-ms 400")
    web = updated(manager, FAULTY, checks=("ready",))
    rules = (ErrorRateRule(min_requests=5), LatencyRule(max_ms=250, hold_seconds=0, min_requests=5))
    with Clients(web.url) as clients:
        status = canary.run(web, spec(rules=rules))
    assert status.stage is Phase.ROLLED_BACK
    assert status.message.startswith("rule latency_p99 failed: p99"), status.message
    assert "(max 250 ms)" in status.message
    assert clients.failed == 0


def test_mirror_finds_a_failing_candidate_before_any_user_reaches_it(
    manager: DeploymentManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WB_TEST_FAULTS", "--fault-error-rate 1")
    web = updated(manager, FAULTY, checks=("ready",))
    with Clients(web.url) as clients:
        status = canary.run(web, spec(mirror=100))
    assert status.stage is Phase.ROLLED_BACK and status.index == -1  # still mirroring
    assert "error_rate" in status.message
    assert status.weight == 0
    weights = [h.weights for h in web.history() if h.action in ("canary", "weight")]
    assert all(w.get(web.state.rollout.candidate, 0) == 0 for w in weights)
    assert clients.failed == 0 and clients.by_version(FAULTY) == 0


@pytest.mark.prometheus
def test_failing_version_is_rolled_back_on_a_real_prometheus(
    manager: DeploymentManager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests._wait import wait_until
    from tests.deploy._prometheus import PrometheusServer, require_prometheus

    require_prometheus()
    monkeypatch.setenv("WB_TEST_FAULTS", "--fault-error-rate 1")
    web = updated(manager, FAULTY, checks=("ready",))
    targets = {c: [r.url] for c, r in web.state.instances.items()}
    prometheus = PrometheusServer(tmp_path / "prometheus", targets, deployment="digits")
    try:
        wait_until(lambda: prometheus.scrapes_done() >= 4, 30, 0.2, what="first scrapes")
        with Clients(web.url) as clients:
            status = canary.run(web, spec(interval=2.0), prometheus=prometheus.url)
    finally:
        prometheus.stop()
    assert status.stage is Phase.ROLLED_BACK
    assert status.message.startswith("rule error_rate failed"), status.message
    assert clients.failed == 0
    assert web.state.canary is not None and web.state.canary.source == "prometheus"


def test_quiet_canary_holds_then_synthetic_traffic_gets_it_judged(
    manager: DeploymentManager,
) -> None:
    web = updated(manager, "1.1.0")
    stop = threading.Event()
    seen: list[str] = []

    def watch(status: object, action: object) -> None:
        seen.append(getattr(action, "kind", ""))
        if len(seen) >= 4:
            stop.set()

    status = canary.run(web, spec(), stop=stop, on_tick=watch)
    assert status.stage is Stage.STEP and status.weight == 25  # held: no traffic at all
    assert seen[1:] == ["hold", "hold", "hold"]
    verdicts = {r.rule: r.verdict for r in status.last}
    # no labelled set and no traffic: agreement is judged on stable's manifest sample
    assert verdicts == {"error_rate": "inconclusive", "latency_p99": "inconclusive",
                        "agreement": "pass"}
    web.abort("quiet")
    web.update("1.1.0", timeout=300)
    status = canary.run(web, spec(synthetic=20.0))
    assert status.stage is Phase.PROMOTED, status.message


def test_the_controllers_rollback_switches_to_the_configuration_prepared_at_the_step(
    manager: DeploymentManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The router configuration a rollback installs stays kept, checked, during the canary;
    the controller's rollback switches to it (no render, no ``nginx -t`` on the way)."""
    import json
    import logging

    from workbench.deploy.tables import routing_table

    monkeypatch.setenv("WB_TEST_FAULTS", "--fault-error-rate 1")
    web = updated(manager, FAULTY, checks=("ready",))
    workdir = web.context.router(web.state).workdir
    kept: list[dict[str, object]] = []

    def on_tick(status: object, action: object) -> None:
        if getattr(action, "kind", "") == "advance":
            kept.append(json.loads((workdir / "rollback.json").read_text()))
            assert (workdir / "nginx.conf.rollback").exists()

    rules = (ErrorRateRule(min_requests=5), LatencyRule(min_requests=10))
    with caplog.at_level(logging.INFO, logger="workbench.deploy.nginx"), Clients(web.url) as clients:
        status = canary.run(web, spec(rules=rules), on_tick=on_tick)
    assert status.stage is Phase.ROLLED_BACK
    assert [k["revision"] for k in kept] == [routing_table(web.state).revision]  # all to stable
    assert any("switched to the checked" in r.getMessage() for r in caplog.records)
    assert not (workdir / "rollback.json").exists()  # used up
    assert clients.failed == 0
