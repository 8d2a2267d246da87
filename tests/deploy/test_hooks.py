"""Hook deliveries off the controller's path, with total deadlines, against real servers
and real processes: a trickling hook server, a hook command that hangs with a child."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.deploy._trickle import TrickleServer, wait_gone
from workbench.deploy.http import DeadlineError, request_within
from workbench.deploy.rollout.hooks import Hooks, deliver


def test_a_trickling_answer_is_cut_at_the_total_deadline() -> None:
    server = TrickleServer(every=0.2)
    try:
        began = time.monotonic()
        with pytest.raises(DeadlineError, match="within 1 s"):
            request_within("GET", server.url + "/metrics", 1.0)
        assert time.monotonic() - began < 1.5  # not 0.2 s per byte for ~40 bytes
    finally:
        server.close()


def test_a_hanging_hook_command_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 600 & echo $! > {pids}; wait"
    began = time.monotonic()
    ok, what = deliver(command, "{}", 0.5)
    assert not ok and "killed with its process group after 0.5 s" in what
    assert time.monotonic() - began < 2.0
    child = int(pids.read_text())
    assert wait_gone(child, 5.0), f"the hook's sleep 600 (pid {child}) outlived it"


def test_a_hook_command_gets_the_event_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "event.json"
    ok, what = deliver(f"cat > {out}", json.dumps({"event": "rollback"}), 5.0)
    assert (ok, what) == (True, "exited 0")
    assert json.loads(out.read_text()) == {"event": "rollback"}
    failed, why = deliver(f"{sys.executable} -c \"import sys; sys.exit('no: busy')\"", "{}", 5.0)
    assert not failed and why.startswith("exited 1") and "no: busy" in why


def test_send_returns_at_once_and_a_slow_hook_delays_no_other(tmp_path: Path) -> None:
    server = TrickleServer(every=2.0)
    out = tmp_path / "events.jsonl"
    hooks = Hooks((server.url + "/hook", f"cat >> {out}; echo >> {out}"), timeout=1.0,
                  retries=1, backoff=0.1)
    try:
        began = time.monotonic()
        hooks.send({"event": "rollback"})
        hooks.send({"event": "abort"})
        assert time.monotonic() - began < 0.1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(out.read_text().splitlines() if out.exists() else []) < 2:
            time.sleep(0.05)
        events = [json.loads(line)["event"] for line in out.read_text().splitlines() if line]
        assert events == ["rollback", "abort"]  # in order, while the URL still trickles
        assert hooks.drain(10)
        # two events, each tried twice within 1 s, 0.1 s backoff between
        assert time.monotonic() - began < 6
        assert [target for target, _ in hooks.failures] == [server.url + "/hook"] * 2
        assert all("within 1 s" in why for _, why in hooks.failures)
        assert server.accepted == 4
    finally:
        hooks.close()
        server.close()


def test_failed_deliveries_are_retried_with_backoff() -> None:
    seen: list[float] = []

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(time.monotonic())
            self.send_response(503 if len(seen) < 3 else 204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hooks = Hooks((f"http://127.0.0.1:{server.server_address[1]}/",), retries=2, backoff=0.2)
    try:
        hooks.send({"event": "promote"})
        assert hooks.drain(10)
    finally:
        hooks.close()
        server.shutdown()
        server.server_close()
    assert len(seen) == 3 and not hooks.failures
    assert seen[1] - seen[0] >= 0.2 and seen[2] - seen[1] >= 0.4  # 0.2 s, then 0.4 s


def test_a_confirm_hook_that_hangs_means_not_confirmed_within_the_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hooks = Hooks(confirm=(f"sleep 600 & echo $! > {pids}; wait",), timeout=0.5)
    began = time.monotonic()
    ok, why = hooks.confirm({"event": "confirm"})
    assert not ok and "killed" in why and time.monotonic() - began < 2.0
    assert wait_gone(int(pids.read_text()), 5.0)
    assert Hooks(confirm=("true",)).confirm({}) == (True, "confirmed")
    assert Hooks(confirm=("false",)).confirm({})[0] is False


def test_a_process_exiting_delivers_its_queued_events_first(tmp_path: Path) -> None:
    """A CLI command (``deploy pause``) sends its event and exits at once: the event still
    goes out, within the hook deadline."""
    import subprocess

    out = tmp_path / "event.json"
    code = (
        "from workbench.deploy.rollout.hooks import Hooks\n"
        f"Hooks(['sleep 0.5; cat > {out}'], timeout=5).send({{'event': 'pause'}})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert json.loads(out.read_text()) == {"event": "pause"}
