"""The panels driven programmatically: click a button, wait, check the hub and the widgets."""

from __future__ import annotations

import shutil
import urllib.request
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests._components import require
from tests._wait import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def session(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from workbench_ext.state import Session

    session = Session(demo_repo, device="cpu", home=tmp_path_factory.mktemp("home"))
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    from workbench.model.demo import digits_dataset

    _, _, x_test, y_test = digits_dataset()
    return {"x_test": x_test[:200], "y_test": y_test[:200], "not_an_input": np.zeros((3, 5))}


@pytest.fixture
def short_home() -> Iterator[Path]:
    """A workbench home with a short path (nginx's unix socket path is limited to 107 bytes)."""
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="wb-ext-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def click(panel: Any, name: str) -> Any:
    panel.buttons[name].click()
    try:
        return panel.wait(120)
    except Exception:
        return None


def enabled(panel: Any) -> set[str]:
    """The panel's buttons a user can press now."""
    names = {name for name, button in panel.buttons.items() if not button.disabled}
    return names | {"live"} if not panel.live.disabled else names


def test_versions_panel_buttons_drive_the_hub(session: Any) -> None:
    from workbench_ext.panels.versions import VersionsPanel

    panel = VersionsPanel(session, "digits")
    try:
        assert panel.version.options[:3] == ("1.0.0", "1.1.0", "1.2.0")
        assert {"stable", "canary", "latest"} <= set(panel.version.options)
        assert "stable" in panel.repository.value and "0.9389" in panel.repository.value
        assert "no version loaded" in panel.loaded.value
        assert panel.device.options == ("cpu", "auto")  # no GPU here: none is offered

        panel.version.value = "stable"
        panel.device.value = "cpu"
        click(panel, "load")
        hub = session.hubs["digits"]
        assert str(hub.active.version) == "1.0.0"
        assert "1.0.0" in panel.loaded.value and "ready" in panel.loaded.value
        assert panel.memory.source.data["version"] == ["1.0.0"]
        # in the kernel a version holds no memory of its own: no bar, and the figure says why
        assert panel.memory.source.data["label"] == ["1.0.0 (in kernel)"]
        assert panel.memory.source.data["mib"] == [0.0]
        assert "share its memory" in panel.memory.figure.title.text
        assert "in kernel" in panel.loaded.value
        assert panel.error is None and "done" in panel.status.value

        panel.version.value = "1.1.0"
        click(panel, "load")
        assert [str(lv.version) for lv in hub.loaded] == ["1.0.0", "1.1.0"]
        assert str(hub.active.version) == "1.0.0"  # loading a second version does not switch
        click(panel, "use")
        assert str(hub.active.version) == "1.1.0"
        assert "active: <b>1.1.0</b>" in panel.header.value
        assert panel.memory.source.data["color"][1] != panel.memory.source.data["color"][0]

        click(panel, "rollback")
        assert str(hub.active.version) == "1.0.0"

        # unloading the active version is refused: the status line says why, the hub is unchanged
        panel.version.value = "1.0.0"
        click(panel, "unload")
        assert panel.error is not None and "is active" in panel.error
        assert "color:#c62828" in panel.status.value
        assert len(hub.loaded) == 2
        assert not any(b.disabled for b in panel.buttons.values())  # buttons come back after a failure

        panel.version.value = "1.1.0"
        click(panel, "unload")
        assert [str(lv.version) for lv in hub.loaded] == ["1.0.0"]
        assert panel.memory.source.data["version"] == ["1.0.0"]

        # a change made elsewhere (a magic, another panel) redraws the panel through hub events
        hub.load("1.2.0", activate=True)
        wait_until(lambda: "active: <b>1.2.0</b>" in panel.header.value, 10, what="the panel to follow")
        hub.use("1.0.0")
        hub.unload("1.2.0")
    finally:
        panel.close()
    assert panel.closed
    with pytest.raises(RuntimeError, match="closed"):
        panel.load("1.0.0")


def test_compare_panel_runs_and_draws(session: Any, digits: dict[str, Any]) -> None:
    from workbench_ext.panels.compare import SAMPLE, ComparePanel

    panel = ComparePanel(session, "digits", namespace=digits)
    try:
        assert panel.data.options == (SAMPLE, "x_test")  # only arrays shaped like the input
        assert panel.data.value == "x_test"
        assert panel.labels.value == "y_test"
        panel.versions.value = ("1.0.0", "1.1.0", "1.2.0")
        panel.batch_size.value = 50
        click(panel, "run")
        assert panel.error is None, panel.error
        result = panel.result
        assert result is not None and result.rows == 200
        assert panel.progress.value == panel.progress.max == 12  # 4 batches x 3 versions
        assert "accuracy" in panel.summary.value and "top1_vs_1.0.0" in panel.summary.value
        assert "Pairwise agreement" in panel.agreement.value

        matrix = panel.matrix.source.data
        assert len(matrix["count"]) == 100 and sum(matrix["count"]) == 200
        same = sum(c for c, x, y in zip(matrix["count"], matrix["x"], matrix["y"], strict=True) if x == y)
        assert same == round(result.agreement.iloc[0]["top1_agreement"] * 200)

        panel.pair_b.value = "1.2.0"  # re-pick the pair: the matrix redraws without re-running
        redrawn = panel.matrix.source.data
        same_b = sum(
            c for c, x, y in zip(redrawn["count"], redrawn["x"], redrawn["y"], strict=True) if x == y
        )
        assert same_b < same

        latency = panel.latency.source.data
        assert set(latency["version"]) == {"1.0.0", "1.1.0", "1.2.0"}
        assert all(top >= 0 for top in latency["top"])

        disagree = result.disagreements()
        assert len(disagree) > 0
        assert f"{len(disagree)} of 200 rows differ" in panel.disagreements.value

        # the manifest sample works without any data in the namespace
        panel.data.value = SAMPLE
        panel.labels.value = "(none)"
        click(panel, "run")
        assert panel.error is None, panel.error
        assert panel.result is not None and panel.result.rows == 400
        assert f"batch {panel.batch_size.value}," in panel.summary.value  # the form and the result agree
    finally:
        panel.close()


def test_compare_panel_form_agrees_with_the_result_it_shows(session: Any, digits: dict[str, Any]) -> None:
    """A result from `%paddle compare --batch-size 64` shown in a fresh panel: the form says 64 too."""
    from workbench_ext import ops
    from workbench_ext.panels.compare import ComparePanel

    result = ops.run_compare(
        session, "digits", ["1.0.0", "1.2.0"], digits["x_test"][:128], batch_size=64, progress=False
    )
    panel = ComparePanel(session, "digits", namespace=digits)
    try:
        assert panel.batch_size.value == 32  # the form's default
        panel.show(result)
        assert panel.batch_size.value == 64 and "batch 64" in panel.summary.value
        assert panel.versions.value == ("1.0.0", "1.2.0")
    finally:
        panel.close()


def test_the_device_list_holds_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.runtime import device

    monkeypatch.setattr(device, "visible_gpu_count", lambda: 0)
    assert device.available_devices() == ["auto", "cpu"]
    monkeypatch.setattr(device, "visible_gpu_count", lambda: 2)
    assert device.available_devices() == ["auto", "cpu", "gpu:0", "gpu:1"]


def _http_infer(url: str, rows: np.ndarray) -> None:
    import json

    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
            ]
        }
    ).encode()
    request = urllib.request.Request(
        f"{url}/v2/models/digits/infer", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


@pytest.mark.slow
def test_deploy_panel_weight_promote_rollback(
    demo_repo: Path, short_home: Path, digits: dict[str, Any]
) -> None:
    require(
        "nginx",
        shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None,
        "install nginx (apt-get install nginx-light)",
    )
    from workbench_ext.panels.deploy import DeployPanel
    from workbench_ext.state import Session

    session = Session(demo_repo, device="cpu", home=short_home)
    manager = session.deployments
    manager.create("panel", "digits", "stable")
    panel = None
    try:
        manager.get("panel").update("1.1.0")
        panel = DeployPanel(session, "panel", interval=0.5, live=False)
        assert "verified" in panel.header.value and "healthy" in panel.header.value
        assert "1.0.0" in panel.instances.value and "1.1.0" in panel.instances.value
        assert panel.weight.value == 0
        assert "update" in panel.history.value
        assert enabled(panel) == {"weight", "promote", "rollback", "abort", "switch", "refresh", "live"}

        # a refresh (the live poller's) never moves the slider the user is choosing a value with
        panel.weight.value = 25
        panel.refresh()
        assert panel.weight.value == 25
        click(panel, "weight")
        assert panel.error is None, panel.error
        assert manager.get("panel").state.weights == {"blue": 75, "green": 25}
        assert "25%" in panel.instances.value
        manager.get("panel").weight(30, "from an SSH shell")  # once set, the slider follows again
        panel.refresh()
        assert panel.weight.value == 30

        # live traffic: requests through the router show up per colour
        url = manager.get("panel").url
        panel.sample()
        for _ in range(40):
            _http_infer(url, digits["x_test"][:4])
        point = panel.sample()
        assert point["blue"]["rps"] is not None and point["blue"]["rps"] > 0
        assert point["green"]["rps"] is not None and point["green"]["rps"] > 0
        assert point["blue"]["error_rate"] == 0.0
        assert point["blue"]["p99_ms"] is not None and point["blue"]["p99_ms"] > 0
        assert len(panel.traffic.source.data["t"]) == 2

        # the y-axes start at 0 and hold what was seen (no -1..1 error-rate axis)
        for fig in panel.traffic.figures:
            assert fig.y_range.start == 0 and fig.y_range.end > 0
        assert panel.traffic.figures[1].y_range.end <= 1

        panel.live.value = True  # the poller streams on its own and redraws with health probes
        wait_until(lambda: len(panel.traffic.source.data["t"]) >= 4, 15, what="live samples")
        manager.get("panel").weight(20, "from an SSH shell")
        wait_until(lambda: "20%" in panel.instances.value, 20, what="a live redraw")
        assert "?" not in panel.instances.value and "ready" in panel.instances.value
        assert "healthy" in panel.header.value
        panel.live.value = False

        click(panel, "promote")
        assert manager.get("panel").state.weights == {"blue": 0, "green": 100}
        assert "promoted" in panel.header.value and panel.weight.value == 100
        assert "promote" not in enabled(panel) and "abort" not in enabled(panel)
        assert {"weight", "rollback", "switch"} <= enabled(panel)

        click(panel, "rollback")
        state = manager.get("panel").state
        assert state.weights == {"blue": 100} and state.phase == "rolled_back"
        assert "rolled_back" in panel.header.value
        assert enabled(panel) == {"refresh", "live"} and panel.weight.disabled

        click(panel, "promote")  # clicked anyway (greyed out): refused, said in the status line
        assert panel.error is not None and "promote" in panel.error
        assert "refused" in panel.history.value
    finally:
        if panel is not None:
            panel.close()
        manager.delete("panel")
        session.close()


def test_versions_panel_loads_into_a_worker_process_and_shows_its_memory_and_state(session: Any) -> None:
    import os
    import signal

    import psutil
    from workbench_ext.panels.versions import VersionsPanel

    hub = session.hub("digits")
    hub.load("1.0.0", activate=True)  # active, in this process: 1.2.0 loads beside it
    if "1.2.0" in hub:  # loaded in-process by an earlier test
        hub.unload("1.2.0")
    panel = VersionsPanel(session, "digits")
    try:
        assert panel.isolation.options == ("auto", "process", "thread")
        panel.version.value = "1.2.0"
        panel.isolation.value = "process"
        click(panel, "load")
        assert panel.error is None, panel.error
        loaded = hub.get("1.2.0")
        assert loaded.isolation == "process"
        (pid,) = loaded.worker_pids
        assert f"pid {pid} ready" in panel.loaded.value
        assert "worker" in panel.loaded.value  # the memory figure is the worker's own
        worker_mib = dict(zip(panel.memory.source.data["version"], panel.memory.source.data["mib"],
                              strict=True))["1.2.0"]
        assert worker_mib > 20, worker_mib
        # what the worker process holds: its RSS, as psutil reads it (within what a refresh moves)
        rss_mib = psutil.Process(pid).memory_info().rss / 2**20
        assert abs(worker_mib - rss_mib) < max(8.0, 0.1 * rss_mib), (worker_mib, rss_mib)
        assert panel.memory.figure.title.text.startswith("worker process RSS")
        os.kill(pid, signal.SIGKILL)  # the panel follows the worker's death and restart
        wait_until(lambda: f"pid {pid} down" in panel.loaded.value, 15, what="the panel to show it down")
        wait_until(lambda: "ready" in panel.loaded.value and f"pid {pid} " not in panel.loaded.value
                   and loaded.state.value == "ready", 120, what="the panel to show the new worker")
        (new_pid,) = loaded.worker_pids
        assert str(hub.active.version) == "1.0.0"
        click(panel, "unload")
        assert "1.2.0" not in hub
        assert not psutil.pid_exists(new_pid)
    finally:
        panel.close()
