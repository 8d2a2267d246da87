"""The canary controller driven look by look with fake metrics, a fake deployment and a
fake clock (each look moves it on by the seconds given)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from workbench.deploy.rollout.analysis import AgreementRule, AnalysisSpec, ErrorRateRule, LatencyRule
from workbench.deploy.rollout.controller import (
    Action,
    CanaryController,
    CanaryStatus,
    Stage,
)
from workbench.deploy.rollout.controller_process import (
    SPAWNED_PID,
    ControllerProcess,
    controller_lock,
    controller_process,
    controller_running,
)
from workbench.deploy.rollout.hooks import Hooks
from workbench.deploy.rollout.phases import Phase
from workbench.deploy.rollout.signals import ColorWindow
from workbench.errors import CanaryConflictError, MetricsError, RolloutError, StateError

INTERVAL = 30.0


class FakeSource:
    """The candidate's traffic per interval (requests, errors, p99), steady: a window of
    ``seconds`` holds that share of it. ``failing`` makes every read raise."""

    def __init__(self) -> None:
        self.candidate = (100.0, 0.0, 20.0)
        self.failing: str | None = None

    def window(self, color: str, seconds: float) -> ColorWindow:
        if self.failing is not None:
            raise MetricsError(self.failing)
        share = seconds / INTERVAL
        if color == "blue":
            return ColorWindow("blue", seconds, 500.0 * share, 0.0, 20.0, 1e8)
        requests, errors, p99 = self.candidate
        return ColorWindow(color, seconds, requests * share, errors * share,
                           p99 if requests else None, 1e8)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def load(self) -> CanaryStatus | None:
        # through JSON, as the state file does
        return None if self.saved is None else CanaryStatus.from_dict(
            json.loads(json.dumps(self.saved))
        )

    def save(self, status: CanaryStatus, action: Action) -> None:
        before = self.load()
        if before is not None and before.revision != status.revision - 1:
            raise CanaryConflictError(f"saved {status.revision} over {before.revision}")
        self.order.append("save")
        self.saved = status.to_dict()
        self.history.append({"action": action.kind, "results": [r.to_dict() for r in status.last]})


SPEC = AnalysisSpec(steps=(5, 25, 50, 100), interval=30.0, max_inconclusive=3,
                    rules=(ErrorRateRule(), LatencyRule()))


def make(spec: AnalysisSpec = SPEC, **kwargs: object) -> tuple[CanaryController, FakeSource, FakeTarget]:
    source, target = FakeSource(), FakeTarget()
    controller = CanaryController("web", target, spec, source, stable="blue",
                                  candidate="green", clock=Clock(), **kwargs)  # type: ignore[arg-type]
    return controller, source, target


def look(controller: CanaryController, seconds: float = INTERVAL) -> CanaryStatus:
    """One look, ``seconds`` after the last one."""
    assert isinstance(controller.clock, Clock)
    controller.clock.now += seconds
    return controller.tick()


def test_good_canary_is_promoted_through_every_step() -> None:
    controller, _, target = make()
    status = controller.begin()
    assert (status.stage, status.weight, target.weights) == (Stage.STEP, 5, [5])
    for expected in (25, 50):
        status = look(controller)
        assert (status.stage, status.weight) == (Stage.STEP, expected)
        assert [r.verdict for r in status.last] == ["pass", "pass"]
    status = look(controller)
    assert status.stage is Phase.PROMOTED and target.weights == [5, 25, 50, 100]
    assert look(controller) == status  # done: nothing more happens


def test_failing_error_rate_rolls_back_naming_the_rule_and_numbers() -> None:
    controller, source, target = make()
    controller.begin()
    source.candidate = (300.0, 15.0, 20.0)  # 5%: above 3%, but not beyond doubt at first
    status = look(controller)
    assert (status.stage, status.weight, status.streaks) == (Stage.STEP, 5, {"error_rate": 1})
    assert status.last[0].verdict == "fail" and "not significant yet" in status.last[0].message
    for _ in range(12):  # the evidence piles up until it is significant
        status = look(controller)
        if status.stage is not Stage.STEP:
            break
    assert status.stage is Phase.ROLLED_BACK
    assert 1 < status.ticks <= 12
    decision = status.last[0].decision
    assert decision is not None and decision["statistic"] >= decision["boundary"]
    assert decision["samples"] == pytest.approx(300.0 * status.ticks)
    assert "error_rate" in status.message and "5.0%" in status.message and "3.0%" in status.message
    assert target.weights == [5, 0]
    assert target.order[-2:] == ["rollback", "save"]  # traffic first, then persist
    assert target.history[-1]["action"] == "rollback"


def test_a_clearly_broken_candidate_is_rolled_back_on_the_first_interval() -> None:
    controller, source, target = make()
    controller.begin()
    source.candidate = (100.0, 60.0, 20.0)
    assert look(controller).stage is Phase.ROLLED_BACK
    assert target.weights == [5, 0]


def test_a_candidate_failing_every_request_is_rolled_back_at_the_first_look() -> None:
    controller, source, target = make()
    controller.begin()
    source.candidate = (600.0, 600.0, 20.0)  # 20 requests/s, all failing
    status = look(controller, 0.5)  # long before the interval ends
    assert status.stage is Phase.ROLLED_BACK and target.weights == [5, 0]
    assert status.message.startswith("rule error_rate failed: 100.0% of 20 requests")
    assert target.history[-1]["action"] == "rollback"


def test_a_step_passes_only_after_its_interval_and_its_evidence() -> None:
    controller, source, target = make()
    controller.begin()
    status = look(controller, 10.0)  # every rule passes, but the step has dwelt 10 s of 30
    assert (status.stage, status.weight, len(target.history)) == (Stage.STEP, 5, 1)
    status = look(controller, 20.0)
    assert (status.stage, status.weight) == (Stage.STEP, 25)
    source.candidate = (15.0, 0.0, 20.0)  # 0.5 requests/s: 15 by the end of the interval
    status = look(controller, 30.0)
    assert (status.stage, status.weight, status.inconclusive) == (Stage.STEP, 25, 1)
    assert target.history[-1]["action"] == "hold"
    status = look(controller, 5.0)  # 17.5 requests: not yet
    assert (status.weight, target.history[-1]["action"]) == (25, "hold")
    status = look(controller, 30.0)  # 32.5 requests, none failed: evidence coming in
    assert (status.weight, status.inconclusive) == (25, 0)
    assert status.message.startswith("holding, evidence coming in: error_rate")
    status = look(controller, 20.0)  # 42.5: not yet
    assert status.weight == 25
    status = look(controller, 50.0)  # 67.5 clean requests: the evidence is in
    assert (status.stage, status.weight) == (Stage.STEP, 50)


def test_a_failing_metrics_source_is_inconclusive_then_pauses_saying_why() -> None:
    spec = AnalysisSpec(steps=(5, 50, 100), interval=30.0, max_failures=4,
                        rules=(ErrorRateRule(), LatencyRule()))
    controller, source, target = make(spec)
    controller.begin()
    source.failing = "Prometheus at http://127.0.0.1:9: ConnectError: refused"
    for count in (1, 2, 3):
        status = look(controller, 1.0)
        assert (status.stage, status.failures) == (Stage.STEP, count)
        assert "cannot read" in status.message and "refused" in status.message
    assert [h["action"] for h in target.history] == ["advance", "observe", "observe", "observe"]
    status = look(controller, 1.0)
    assert status.stage is Stage.PAUSED
    assert status.message.startswith("paused after 4 failed reads in a row (metrics: ")
    assert all(r.verdict == "inconclusive" and "refused" in r.message for r in status.last)
    assert target.weights == [5]  # never promoted, never rolled back
    source.failing = None
    controller.command("resume")
    status = look(controller, 30.0)
    assert (status.stage, status.weight, status.failures) == (Stage.STEP, 50, 0)


def test_a_source_failing_at_the_end_of_an_interval_is_an_inconclusive_interval() -> None:
    controller, source, _ = make()
    controller.begin()
    source.failing = "no instance of green answered its metrics scrape"
    status = look(controller, 30.0)
    assert (status.stage, status.inconclusive) == (Stage.STEP, 1)
    assert "cannot read metrics" in status.message


def test_quiet_canary_holds_then_pauses_saying_why_then_resumes() -> None:
    controller, source, target = make()
    controller.begin()
    source.candidate = (3.0, 0.0, 20.0)
    for count in (1, 2):
        status = look(controller)
        assert (status.stage, status.weight, status.inconclusive) == (Stage.STEP, 5, count)
        assert status.last[0].verdict == "inconclusive"
    status = look(controller)
    assert status.stage is Stage.PAUSED and "3 inconclusive intervals" in status.message
    assert "need 20" in status.message
    assert look(controller).stage is Stage.PAUSED  # paused: ticks change nothing
    status = controller.command("resume")
    assert (status.stage, status.inconclusive) == (Stage.STEP, 0)
    source.candidate = (100.0, 0.0, 20.0)
    status = look(controller)
    assert (status.stage, status.weight) == (Stage.STEP, 25)
    assert target.weights == [5, 25]


def test_gate_waits_for_resume_or_promote() -> None:
    spec = AnalysisSpec(steps=(5, "gate", 50, 100), interval=30.0, rules=(ErrorRateRule(),))
    controller, _, target = make(spec)
    controller.begin()
    status = look(controller)
    assert (status.stage, status.weight) == (Stage.GATE, 5)
    assert look(controller).stage is Stage.GATE  # waits however long
    status = controller.command("resume")
    assert (status.stage, status.weight) == (Stage.STEP, 50)
    status = controller.command("promote")  # skip ahead
    assert status.stage is Phase.PROMOTED and target.weights == [5, 50, 100]


def test_abort_mid_step_sends_all_traffic_to_stable() -> None:
    controller, _, target = make()
    controller.begin()
    look(controller)
    status = controller.command("abort", "not today")
    assert (status.stage, status.message) == (Stage.ABORTED, "not today")
    assert target.weights == [5, 25, 0]
    with pytest.raises(RolloutError, match="aborted"):
        controller.command("resume")


def test_a_finished_canary_stands_at_the_deployments_phase_one_enum_for_each_word() -> None:
    assert not set(Stage.__members__) & set(Phase.__members__)
    assert {s.value for s in Stage} | {Phase.PROMOTED.value, Phase.ROLLED_BACK.value} == {
        "mirror", "step", "gate", "paused", "aborted", "promoted", "rolled_back"}
    for stage in ("promoted", "rolled_back", "aborted", "gate"):
        status = CanaryStatus.from_dict({"steps": [5, "gate", 100], "index": 1, "stage": stage})
        assert status.stage.value == stage and status.done is (stage != "gate")
        assert isinstance(status.stage, Phase if stage != "aborted" and stage != "gate" else Stage)
    with pytest.raises(ValueError, match="unknown canary stage 'verified'"):
        CanaryStatus.from_dict({"steps": [100], "stage": "verified"})


def test_a_command_during_a_look_wins_and_the_look_is_dropped() -> None:
    """A promote arriving while a look reads its metrics: the step it entered stands (the
    look's decision, made on the step before, is dropped) and is judged afresh."""
    controller, source, target = make()
    controller.begin()  # 5%
    assert isinstance(controller.clock, Clock)
    read = source.window
    spans: list[float] = []
    commanded: list[CanaryStatus] = []

    def window(color: str, seconds: float) -> ColorWindow:
        if color == "green":
            spans.append(seconds)
        if not commanded:  # another shell's `deploy promote`, while this look reads
            commanded.append(controller.command("promote"))
        return read(color, seconds)

    source.window = window  # type: ignore[method-assign]
    status = look(controller)  # an interval has passed: the look would advance to 25% too
    assert commanded[0].weight == 25 and commanded[0].revision == 2
    assert (status.stage, status.weight, status.revision) == (Stage.STEP, 25, 2)
    assert target.weights == [5, 25]  # one step each: nothing lost, nothing twice
    assert [h["action"] for h in target.history] == ["advance", "advance"]
    controller.clock.now += 2.0
    controller.tick()
    assert spans[-1] == pytest.approx(2.0)  # the step the command entered: a fresh window


def test_two_commands_at_once_take_two_steps() -> None:
    controller, _, target = make()
    controller.begin()
    first = controller.command("promote")
    second = controller.command("promote")
    assert (first.weight, second.weight, target.weights) == (25, 50, [5, 25, 50])
    assert second.revision == first.revision + 1


def test_a_save_over_another_revision_is_refused() -> None:
    controller, _, target = make()
    status = controller.begin()
    with pytest.raises(CanaryConflictError):
        target.save(status, Action("hold"))  # decided on revision 0, but 1 is saved


def test_restart_from_persisted_state_carries_on_where_it_was() -> None:
    controller, source, target = make()
    controller.begin()
    source.candidate = (100.0, 5.0, 20.0)
    look(controller)
    look(controller)  # error_rate above 3%, not significant yet
    again = CanaryController("web", target, SPEC, source, stable="blue", candidate="green",
                             clock=controller.clock)
    status = look(again)
    assert (status.stage, status.at_step, status.streaks) == (Stage.STEP, 3, {"error_rate": 3})
    # the step's start survived the restart: the test judges all three intervals
    assert status.last[0].samples == pytest.approx(300.0)


def test_mirror_phase_judges_before_any_weight() -> None:
    spec = AnalysisSpec(steps=(50, 100), interval=30.0, mirror=100, rules=(ErrorRateRule(),))
    controller, source, target = make(spec)
    status = controller.begin()
    assert (status.stage, status.weight, target.weights) == (Stage.MIRROR, 0, [0])
    source.candidate = (100.0, 50.0, 20.0)
    assert look(controller).stage is Phase.ROLLED_BACK
    assert target.weights == [0, 0]  # never above 0%


def test_hooks_get_json_events(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    hook = f"{sys.executable} -c \"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + chr(10))\""
    controller, source, _ = make(hooks=Hooks((hook,)))
    controller.begin()
    source.candidate = (100.0, 60.0, 20.0)
    look(controller)
    assert controller.hooks.drain(30)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["event"] for e in events] == ["advance", "rollback"]
    assert events[-1]["results"][0]["rule"] == "error_rate"
    assert events[-1]["results"][0]["value"] == pytest.approx(0.6)
    assert events[-1]["results"][0]["decision"]["significant"]


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
        look(controller)
        assert controller.hooks.drain(30)
    finally:
        server.shutdown()
        server.server_close()
    assert [b["event"] for b in bodies] == ["advance", "rollback"]
    assert bodies[-1]["deployment"] == "web" and bodies[-1]["weight"] == 0


def test_a_rollback_never_waits_on_a_hanging_hook(tmp_path: Path) -> None:
    from tests.deploy._trickle import wait_gone

    pids = tmp_path / "pids"
    hooks = Hooks((f"sleep 600 & echo $! >> {pids}; wait",), timeout=1.0, retries=0)
    controller, source, target = make(hooks=hooks)
    controller.begin()
    source.candidate = (600.0, 600.0, 20.0)
    began = time.monotonic()
    status = look(controller, 1.0)
    assert status.stage is Phase.ROLLED_BACK and target.weights == [5, 0]
    assert time.monotonic() - began < 0.5  # the hook (advance, rollback) runs elsewhere
    assert hooks.drain(10)
    children = [int(line) for line in pids.read_text().split()]
    assert len(children) == 2 and all(wait_gone(pid, 5.0) for pid in children)


def test_an_unconfirmed_promotion_pauses_at_the_last_step() -> None:
    spec = AnalysisSpec(steps=(50, 100), interval=30.0, rules=(ErrorRateRule(),),
                        confirm=("sleep 600",), hook_timeout=0.5)
    controller, _, target = make(spec)
    controller.begin()
    began = time.monotonic()
    status = look(controller)
    assert time.monotonic() - began < 2.0
    assert (status.stage, status.weight) == (Stage.PAUSED, 50)
    assert status.message.startswith("promotion not confirmed: confirm hook sleep 600 killed")
    assert target.weights == [50] and target.history[-1]["action"] == "pause"
    controller.command("resume")
    controller.spec = replace(spec, confirm=("true",))
    controller.hooks = Hooks(confirm=("true",))
    status = look(controller)
    assert status.stage is Phase.PROMOTED and target.weights == [50, 100]


def test_a_slow_output_check_does_not_stop_the_looks() -> None:
    """The replay at an interval's end runs off the looks: a candidate failing meanwhile is
    rolled back at once, and the interval ends (the step passes) once the check is in."""
    release = threading.Event()
    replays: list[float] = []

    def output() -> None:
        replays.append(time.monotonic())
        release.wait(20.0)  # a replay on a very busy host

    spec = AnalysisSpec(steps=(5, 25, 100), interval=30.0, scrape=0.05,
                        rules=(ErrorRateRule(), AgreementRule()))
    controller, source, target = make(spec, output=output)
    controller.begin()
    began = time.monotonic()
    status = look(controller)  # the interval has passed: the replay starts
    assert (status.stage, status.weight, len(replays)) == (Stage.STEP, 5, 1)
    status = look(controller, 0.5)
    assert status.weight == 5 and len(replays) == 1  # still under way: the step waits for it
    source.candidate = (600.0, 600.0, 20.0)  # now failing every request
    status = look(controller, 0.5)
    assert status.stage is Phase.ROLLED_BACK and target.weights == [5, 0]
    assert time.monotonic() - began < 10.0  # never blocked by the replay
    release.set()


def test_the_interval_ends_at_the_first_look_after_the_output_check_is_in() -> None:
    release = threading.Event()
    spec = AnalysisSpec(steps=(5, 25, 100), interval=30.0, scrape=0.05,
                        rules=(ErrorRateRule(), AgreementRule()))
    controller, _, target = make(spec, output=lambda: release.wait(20.0) and None)
    controller.begin()
    status = look(controller)
    assert status.weight == 5 and not target.history[1:]  # nothing decided yet
    release.set()
    time.sleep(0.2)
    status = look(controller, 1.0)
    assert (status.stage, status.weight) == (Stage.STEP, 25)
    assert [r.verdict for r in status.last] == ["pass", "skip"]  # the agreement was judged


def test_a_look_reads_both_colours_at_once() -> None:
    """Each window is a round trip to busy instances: the candidate's is not read after
    stable's answered (a broken candidate's look waits on one round trip, not two)."""

    class Meeting(FakeSource):
        def __init__(self) -> None:
            super().__init__()
            self.both = threading.Barrier(2, timeout=5.0)

        def window(self, color: str, seconds: float) -> ColorWindow:
            self.both.wait()  # broken (BrokenBarrierError) unless the other read is under way
            return super().window(color, seconds)

    source, target = Meeting(), FakeTarget()
    controller = CanaryController("web", target, SPEC, source, stable="blue",  # type: ignore[arg-type]
                                  candidate="green", clock=Clock())
    controller.begin()
    status = look(controller)
    assert not any("cannot read" in r.message for r in status.last), status.last
    assert status.step is not None and status.weight == 25


def test_the_first_look_comes_a_look_after_traffic_moved_not_after_it_was_saved() -> None:
    """Saving the status after the first weight can take a while on a busy machine; a
    broken candidate takes traffic meanwhile, so the first look is not put off by it."""
    moments: dict[str, float] = {}

    class SlowSave(FakeTarget):
        def set_weight(self, percent: int, reason: str) -> None:
            moments.setdefault("moved", time.monotonic())
            super().set_weight(percent, reason)

        def save(self, status: CanaryStatus, action: Action) -> None:
            time.sleep(1.0)
            super().save(status, action)

    spec = replace(SPEC, interval=1.0, scrape=1.0)
    source, target = FakeSource(), SlowSave()
    source.candidate = (100.0, 100.0, 20.0)  # every request fails: rolled back at the first look
    controller = CanaryController("web", target, spec, source, stable="blue",  # type: ignore[arg-type]
                                  candidate="green")

    def looked(status: CanaryStatus, action: Action) -> None:
        if action.kind == "rollback":
            moments.setdefault("rollback", time.monotonic())

    controller.listeners.append(looked)
    controller.begin()
    status = controller.run()
    assert status.stage is Phase.ROLLED_BACK
    # a look (1 s) after the traffic moved plus the rollback's own save (1 s): not three
    assert moments["rollback"] - moments["moved"] < 2.6, moments
