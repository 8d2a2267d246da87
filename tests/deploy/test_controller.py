"""The canary controller driven tick by tick with fake metrics and a fake deployment."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from workbench.deploy.rollout.analysis import AnalysisSpec, ErrorRateRule, LatencyRule
from workbench.deploy.rollout.controller import (
    SPAWNED_PID,
    Action,
    CanaryController,
    CanaryStatus,
    ControllerProcess,
    Hooks,
    Stage,
    controller_lock,
    controller_process,
    controller_running,
)
from workbench.deploy.rollout.signals import ColourWindow
from workbench.errors import RolloutError, StateError


class FakeSource:
    """Each colour answers the next scripted (requests, errors, p99) window."""

    def __init__(self) -> None:
        self.candidate = (100.0, 0.0, 20.0)

    def window(self, colour: str, seconds: float) -> ColourWindow:
        if colour == "blue":
            return ColourWindow("blue", seconds, 500.0, 0.0, 20.0, 1e8)
        requests, errors, p99 = self.candidate
        return ColourWindow(colour, seconds, requests, errors, p99 if requests else None, 1e8)


@dataclass
class FakeTarget:
    weights: list[int] = field(default_factory=list)
    saved: dict[str, object] | None = None
    history: list[dict[str, object]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def set_weight(self, percent: int, reason: str) -> None:
        self.order.append("weight")
        self.weights.append(percent)

    def mirror(self, percent: int, reason: str) -> None:
        self.order.append("mirror")
        self.weights.append(0)

    def promote(self, reason: str) -> None:
        self.order.append("promote")
        self.weights.append(100)

    def rollback(self, reason: str) -> None:
        self.order.append("rollback")
        self.weights.append(0)

    def load(self) -> CanaryStatus | None:
        # through JSON, as the state file does
        return None if self.saved is None else CanaryStatus.from_dict(
            json.loads(json.dumps(self.saved))
        )

    def save(self, status: CanaryStatus, action: Action) -> None:
        self.order.append("save")
        self.saved = status.to_dict()
        self.history.append({"action": action.kind, "results": [r.to_dict() for r in status.last]})


SPEC = AnalysisSpec(steps=(5, 25, 50, 100), interval=30.0, max_inconclusive=3,
                    rules=(ErrorRateRule(), LatencyRule()))


def make(spec: AnalysisSpec = SPEC, **kwargs: object) -> tuple[CanaryController, FakeSource, FakeTarget]:
    source, target = FakeSource(), FakeTarget()
    controller = CanaryController("web", target, spec, source, stable="blue",
                                  candidate="green", clock=lambda: 1000.0, **kwargs)  # type: ignore[arg-type]
    return controller, source, target


def test_good_canary_is_promoted_through_every_step() -> None:
    controller, _, target = make()
    status = controller.begin()
    assert (status.stage, status.weight, target.weights) == (Stage.STEP, 5, [5])
    for expected in (25, 50):
        status = controller.tick()
        assert (status.stage, status.weight) == (Stage.STEP, expected)
        assert [r.verdict for r in status.last] == ["pass", "pass"]
    status = controller.tick()
    assert status.stage is Stage.PROMOTED and target.weights == [5, 25, 50, 100]
    assert controller.tick() == status  # done: nothing more happens


def test_failing_error_rate_rolls_back_naming_the_rule_and_numbers() -> None:
    controller, source, target = make()
    controller.begin()
    source.candidate = (100.0, 5.0, 20.0)  # 5%: above 3%, but not beyond doubt
    for streak in (1, 2):
        status = controller.tick()
        assert (status.stage, status.weight, status.streaks) == (Stage.STEP, 5, {"error_rate": streak})
        assert status.last[0].verdict == "fail"
    status = controller.tick()
    assert status.stage is Stage.ROLLED_BACK
    assert "error_rate" in status.message and "5.0%" in status.message and "3.0%" in status.message
    assert target.weights == [5, 0]
    assert target.order[-2:] == ["rollback", "save"]  # traffic first, then persist
    assert target.history[-1]["action"] == "rollback"


def test_a_clearly_broken_candidate_is_rolled_back_on_the_first_interval() -> None:
    controller, source, target = make()
    controller.begin()
    source.candidate = (100.0, 60.0, 20.0)
    assert controller.tick().stage is Stage.ROLLED_BACK
    assert target.weights == [5, 0]


def test_quiet_canary_holds_then_pauses_saying_why_then_resumes() -> None:
    controller, source, target = make()
    controller.begin()
    source.candidate = (3.0, 0.0, 20.0)
    for count in (1, 2):
        status = controller.tick()
        assert (status.stage, status.weight, status.inconclusive) == (Stage.STEP, 5, count)
        assert status.last[0].verdict == "inconclusive"
    status = controller.tick()
    assert status.stage is Stage.PAUSED and "3 inconclusive intervals" in status.message
    assert "need 20" in status.message
    assert controller.tick().stage is Stage.PAUSED  # paused: ticks change nothing
    status = controller.command("resume")
    assert (status.stage, status.inconclusive) == (Stage.STEP, 0)
    source.candidate = (100.0, 0.0, 20.0)
    status = controller.tick()
    assert (status.stage, status.weight) == (Stage.STEP, 25)
    assert target.weights == [5, 25]


def test_gate_waits_for_resume_or_promote() -> None:
    spec = AnalysisSpec(steps=(5, "gate", 50, 100), interval=30.0, rules=(ErrorRateRule(),))
    controller, _, target = make(spec)
    controller.begin()
    status = controller.tick()
    assert (status.stage, status.weight) == (Stage.GATE, 5)
    assert controller.tick().stage is Stage.GATE  # waits however long
    status = controller.command("resume")
    assert (status.stage, status.weight) == (Stage.STEP, 50)
    status = controller.command("promote")  # skip ahead
    assert status.stage is Stage.PROMOTED and target.weights == [5, 50, 100]


def test_abort_mid_step_sends_all_traffic_to_stable() -> None:
    controller, _, target = make()
    controller.begin()
    controller.tick()
    status = controller.command("abort", "not today")
    assert (status.stage, status.message) == (Stage.ABORTED, "not today")
    assert target.weights == [5, 25, 0]
    with pytest.raises(RolloutError, match="aborted"):
        controller.command("resume")


def test_restart_from_persisted_state_carries_on_where_it_was() -> None:
    controller, source, target = make()
    controller.begin()
    source.candidate = (100.0, 5.0, 20.0)
    controller.tick()
    controller.tick()  # error_rate failing 2 of 3 intervals
    again = CanaryController("web", target, SPEC, source, stable="blue", candidate="green")
    status = again.tick()
    assert status.stage is Stage.ROLLED_BACK  # the streak survived the restart


def test_mirror_phase_judges_before_any_weight() -> None:
    spec = AnalysisSpec(steps=(50, 100), interval=30.0, mirror=100, rules=(ErrorRateRule(),))
    controller, source, target = make(spec)
    status = controller.begin()
    assert (status.stage, status.weight, target.weights) == (Stage.MIRROR, 0, [0])
    source.candidate = (100.0, 50.0, 20.0)
    assert controller.tick().stage is Stage.ROLLED_BACK
    assert target.weights == [0, 0]  # never above 0%


def test_hooks_get_json_events(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    hook = f"{sys.executable} -c \"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + chr(10))\""
    controller, source, _ = make(hooks=Hooks((hook,)))
    controller.begin()
    source.candidate = (100.0, 60.0, 20.0)
    controller.tick()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["event"] for e in events] == ["advance", "rollback"]
    assert events[-1]["results"][0]["rule"] == "error_rate"
    assert events[-1]["results"][0]["value"] == pytest.approx(0.6)


def test_only_one_controller_per_deployment(tmp_path: Path) -> None:
    assert controller_running(tmp_path) is None
    with (
        controller_lock(tmp_path),
        pytest.raises(StateError, match="already runs"),
        controller_lock(tmp_path),
    ):
        pass
    assert controller_running(tmp_path) is None


def test_controller_process_names_the_latest_controller_and_whether_it_runs(tmp_path: Path) -> None:
    assert controller_process(tmp_path) == ControllerProcess(None, False)
    with controller_lock(tmp_path):
        assert controller_process(tmp_path) == ControllerProcess(os.getpid(), True)
    assert controller_process(tmp_path) == ControllerProcess(os.getpid(), False)
    time.sleep(0.01)
    (tmp_path / SPAWNED_PID).write_text("4242")  # started later, never took the lock
    assert controller_process(tmp_path) == ControllerProcess(4242, False)
    with controller_lock(tmp_path):
        assert controller_process(tmp_path) == ControllerProcess(os.getpid(), True)


def test_url_hooks_get_the_event_posted_as_json() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    bodies: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["content-length"])
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        controller, source, _ = make(hooks=Hooks((url,)))
        controller.begin()
        source.candidate = (100.0, 60.0, 20.0)
        controller.tick()
    finally:
        server.shutdown()
        server.server_close()
    assert [b["event"] for b in bodies] == ["advance", "rollback"]
    assert bodies[-1]["deployment"] == "web" and bodies[-1]["weight"] == 0
