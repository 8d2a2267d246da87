"""The deployment panel: blue/green state, traffic weight, promote/rollback/abort, live traffic.

Reads and changes a deployment only through ``workbench.deploy``'s Python API (the
same persisted state as ``workbench deploy`` in an SSH shell). While ``live`` is on,
a background thread scrapes each colour's ``/metrics`` every few seconds and streams
requests/s, error rate and p99 latency into the Bokeh figures, and now and then
redraws the state (with health probes).

Each button is enabled only in the phases where its action can work
(``ACTION_PHASES``), and a redraw never moves the traffic slider while the user
is choosing a value: it follows the deployment again once "Set weight" (or
another action) was clicked.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import TYPE_CHECKING, Any

from workbench.deploy import TrafficSampler, steer
from workbench_ext import plots
from workbench_ext.display import history_rows
from workbench_ext.panels import Panel, html_table

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

    from workbench_ext.state import Session

log = logging.getLogger(__name__)
HISTORY_ROWS = 12
PHASE_COLORS = {
    "stable": "#2e7d32",
    "promoted": "#2e7d32",
    "verified": "#1565c0",
    "failed": "#c62828",
    "rolled_back": "#ef6c00",
}
#: The phases in which each action can work (the rollout's rules); elsewhere its button is greyed out.
ACTION_PHASES: dict[str, frozenset[str]] = {
    "weight": frozenset({"verified", "canary", "promoted"}),
    "promote": frozenset({"verified", "canary"}),
    "rollback": frozenset({"verified", "canary", "promoted"}),
    "abort": frozenset({"starting", "verifying", "verified", "canary", "failed"}),
    "switch": frozenset({"verified", "canary", "promoted"}),
}


class DeployPanel(Panel):
    """One blue/green deployment: state, weight slider, actions, live traffic, history."""

    uses_paddle = False  # it only talks HTTP to the router and the instances

    def __init__(self, session: Session, name: str, *, interval: float = 2.0, live: bool = True) -> None:
        import ipywidgets as w

        super().__init__()
        self.session = session
        self.name = name
        self.deployment = session.deployments.get(name)
        self.interval = interval
        self.sampler = TrafficSampler()
        self.phase = ""
        self.editing = False  # the user moved the slider and has not set the weight yet
        self._drawing = threading.local()  # set while refresh() itself moves widgets
        self._redraw = threading.RLock()
        self.header = w.HTML()
        self.instances = w.HTML()
        self.canary = w.HTML()  # the canary's step plan and rule verdicts, when one ran
        self.history = w.HTML()
        self.weight = w.IntSlider(
            value=0,
            min=0,
            max=100,
            step=5,
            description="candidate %",
            continuous_update=False,
            style={"description_width": "initial"},
            layout=w.Layout(width="360px"),
        )
        self.live = w.ToggleButton(
            value=False, description="live", icon="line-chart", tooltip="Scrape metrics every few seconds"
        )
        self.live.observe(lambda change: self._set_live(bool(change["new"])), names="value")
        self.weight.observe(self._slider_moved, names="value")
        self.traffic = plots.traffic_plot()
        self.plot = w.HBox(  # wraps onto more lines in a narrow notebook
            [self.figure(fig) for fig in self.traffic.figures],
            layout=w.Layout(flex_flow="row wrap", width="100%"),
        )
        actions = w.HBox(
            [
                self.weight,
                self._button("weight", "Set weight", lambda: self.set_weight(), icon="sliders"),
                self._button("promote", "Promote", lambda: self.promote(), style="success", icon="check"),
                self._button("rollback", "Rollback", lambda: self.rollback(), style="danger", icon="undo"),
                self._button("abort", "Abort", lambda: self.abort(), style="warning", icon="times"),
                self._button("switch", "Switch", lambda: self.switch(), icon="exchange"),
                self._button("refresh", "", lambda: self.refresh(), icon="refresh", tooltip="Refresh"),
                self.live,
            ],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        self.widget = w.VBox(
            [
                self.header,
                self.instances,
                self.canary,
                actions,
                w.HBox([self.progress, self.status]),
                self.plot,
                w.HTML("<b>History</b>"),
                self.history,
            ],
            layout=w.Layout(border="1px solid #ddd", padding="8px"),
        )
        self.widget.add_class("workbench-deploy-panel")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.refresh()
        self.live.value = live

    def __repr__(self) -> str:
        return f"<DeployPanel {self.name}>"

    # -- drawing ---------------------------------------------------------------------

    def allowed(self, action: str) -> bool:
        phases = ACTION_PHASES.get(action)
        return phases is None or self.phase in phases

    def _slider_moved(self, change: dict[str, Any]) -> None:
        if getattr(self._drawing, "on", False):
            return
        self.editing = True  # refreshes leave the slider alone until the weight is set
        self.buttons["weight"].button_style = "primary"

    def refresh(self, *, probe: bool = True) -> None:
        """Redraw from the persisted state; ``probe`` also asks each colour whether it is ready."""
        if self.name not in self.session.deployments.names():
            self._gone()
            return
        status = self.deployment.status(probe=probe)
        with self._redraw:
            self._drawing.on = True
            try:
                self._draw(status, probe)
            finally:
                self._drawing.on = False

    def _draw(self, status: Any, probe: bool) -> None:
        data = status.to_dict()
        phase = data["phase"]
        self.phase = phase
        color = PHASE_COLORS.get(phase, "#444")
        health = "healthy" if data["healthy"] else "not healthy" if probe else ""
        message = (
            f"<br><span style='color:#666'>{html.escape(data['message'])}</span>" if data["message"] else ""
        )
        self.header.value = (
            f"<h3 style='margin:2px 0'>{html.escape(self.name)} · {html.escape(data['model'])}</h3>"
            f"<span>router <code>{html.escape(data['url'])}</code> · phase "
            f"<b style='color:{color}'>{html.escape(phase)}</b> · {health}</span>{message}"
        )
        rows = []
        for inst in data["instances"]:
            swatch = plots.COLOR_HEX.get(inst["color"], "#999")
            ready = "ready" if inst["ready"] else (inst["error"] or "not ready") if probe else "?"
            if probe and inst.get("state") == "lost":  # its container or its engine is gone
                ready = f"lost: {inst['error']}"
            where = inst["url"] + (f" on {inst['engine']}" if inst.get("engine") else "")
            rows.append(
                f"<tr><td><span style='color:{swatch}'>■</span> {inst['color']}</td><td>{inst['role']}</td>"
                f"<td>{html.escape(inst['version'])}</td><td>{inst['weight']}%</td>"
                f"<td>{html.escape(ready)}</td><td><code>{html.escape(where)}</code></td></tr>"
            )
        self.instances.value = (
            "<table class='workbench-table' style='font-size:12px'><tr><th>colour</th><th>role</th>"
            "<th>version</th><th>traffic</th><th>health</th><th>url</th></tr>" + "".join(rows) + "</table>"
        )
        from workbench_ext.canary import panel_html

        self.canary.value = panel_html(self.deployment)
        if not self.editing:
            candidate = status.state.rollout.candidate
            self.weight.value = int(data["weights"].get(candidate, 0))
        self.weight.disabled = not self.allowed("weight")
        self.live.disabled = False
        busy = self.pending is not None and not self.pending.done()
        self._enable(busy)
        import pandas as pd

        entries = self.deployment.history(HISTORY_ROWS)
        frame = pd.DataFrame.from_records(history_rows(entries))  # oldest first, as the CLI
        self.history.value = html_table(frame.set_index("time") if len(frame) else frame)

    def _gone(self) -> None:
        """The deployment was deleted (here, in another cell or an SSH shell): say so, keep the rest."""
        self.phase = "deleted"
        self._stop.set()
        self.header.value = (
            f"<h3 style='margin:2px 0'>{html.escape(self.name)}</h3>"
            "<span>phase <b style='color:#666'>deleted</b> · the router and its instances are gone; "
            "the figures and history below are what the panel last saw</span>"
        )
        self.weight.disabled = True
        self.live.disabled = True
        self._enable()  # only refresh: the name may be created again

    # -- live traffic ----------------------------------------------------------------

    def sample(self) -> dict[str, dict[str, float | None]]:
        """Scrape each colour's /metrics once and stream the rates into the figures."""
        state = self.deployment.state
        point = self.sampler.scrape({c: r.urls for c, r in state.instances.items()})
        self.traffic.stream(point)
        return point

    def _set_live(self, on: bool) -> None:
        if on and (self._poller is None or not self._poller.is_alive()):
            self._stop.clear()
            self._poller = threading.Thread(
                target=self._poll, name=f"workbench-live-{self.name}", daemon=True
            )
            self._poller.start()
        elif not on:
            self._stop.set()

    def _poll(self) -> None:
        ticks = 0
        while not self._stop.is_set() and not self.closed:
            try:
                self.sample()
                ticks += 1
                if ticks % 5 == 0 and (self.pending is None or self.pending.done()):
                    self.refresh()  # probes too: health stays known while live is on
            except Exception:
                log.debug("live update of %s failed", self.name, exc_info=True)
            self._stop.wait(self.interval)

    # -- actions ---------------------------------------------------------------------

    def act(self, label: str, work: Callable[[], Any]) -> Future[Any]:
        """Run a deployment action; once it succeeded the slider follows the deployment again."""

        def run() -> Any:
            result = work()
            self.editing = False
            self.buttons["weight"].button_style = ""
            return result

        return self.submit(label, run)

    def set_weight(self, percent: int | None = None) -> Future[Any]:
        value = int(self.weight.value if percent is None else percent)
        return self.act(
            f"{value}% to the candidate",
            lambda: self.deployment.weight(value, "weight slider in the notebook"),
        )

    def promote(self) -> Future[Any]:
        return self.act("promoting", lambda: self._steer("promote"))

    def rollback(self) -> Future[Any]:
        return self.act("rolling back", lambda: self._steer("rollback"))

    def abort(self) -> Future[Any]:
        return self.act("aborting", lambda: self._steer("abort"))

    def _steer(self, verb: str) -> Any:
        """During a canary, its controller takes the button (promote: skip ahead a step)."""
        return steer(self.deployment, verb, f"{verb} button in the notebook").state

    def switch(self) -> Future[Any]:
        return self.act("switching", lambda: self.deployment.switch("switch button in the notebook"))

    def close(self) -> None:
        self._stop.set()
        super().close()
        if self._poller is not None:
            self._poller.join(timeout=self.interval + 2)
