"""The deployment panel: blue/green state, traffic weight, promote/rollback/abort, live traffic.

Reads and changes a deployment only through ``workbench.deploy``'s Python API (the
same persisted state as ``workbench deploy`` in an SSH shell). While ``live`` is on,
a background thread scrapes each colour's ``/metrics`` every few seconds and streams
requests/s, error rate and p99 latency into the Bokeh figures.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import TYPE_CHECKING, Any

from workbench.deploy.traffic import TrafficSampler
from workbench_ext import plots
from workbench_ext.display import history_rows
from workbench_ext.panels import Panel, html_table

if TYPE_CHECKING:
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
        self.header = w.HTML()
        self.instances = w.HTML()
        self.history = w.HTML()
        self.weight = w.IntSlider(
            value=0,
            min=0,
            max=100,
            step=5,
            description="candidate %",
            continuous_update=False,
            layout=w.Layout(width="360px"),
        )
        self.live = w.ToggleButton(
            value=False, description="live", icon="line-chart", tooltip="Scrape metrics every few seconds"
        )
        self.live.observe(lambda change: self._set_live(bool(change["new"])), names="value")
        self.traffic = plots.traffic_plot()
        from bokeh.layouts import row

        self.plot = self.figure(row(*self.traffic.figures))
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

    def refresh(self, *, probe: bool = True) -> None:
        status = self.deployment.status(probe=probe)
        data = status.to_dict()
        phase = data["phase"]
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
            rows.append(
                f"<tr><td><span style='color:{swatch}'>■</span> {inst['color']}</td><td>{inst['role']}</td>"
                f"<td>{html.escape(inst['version'])}</td><td>{inst['weight']}%</td>"
                f"<td>{html.escape(ready)}</td><td><code>{html.escape(inst['url'])}</code></td></tr>"
            )
        self.instances.value = (
            "<table class='workbench-table' style='font-size:12px'><tr><th>colour</th><th>role</th>"
            "<th>version</th><th>traffic</th><th>health</th><th>url</th></tr>" + "".join(rows) + "</table>"
        )
        candidate = status.state.rollout.candidate
        self.weight.value = int(data["weights"].get(candidate, 0))
        import pandas as pd

        entries = self.deployment.history(HISTORY_ROWS)
        frame = pd.DataFrame.from_records(list(reversed(history_rows(entries))))
        self.history.value = html_table(frame.set_index("time") if len(frame) else frame)

    # -- live traffic ----------------------------------------------------------------

    def sample(self) -> dict[str, dict[str, float | None]]:
        """Scrape each colour's /metrics once and stream the rates into the figures."""
        state = self.deployment.state
        point = self.sampler.scrape({c: r.url for c, r in state.instances.items()})
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
                    self.refresh(probe=False)
            except Exception:
                log.debug("live update of %s failed", self.name, exc_info=True)
            self._stop.wait(self.interval)

    # -- actions ---------------------------------------------------------------------

    def set_weight(self, percent: int | None = None) -> Future[Any]:
        value = int(self.weight.value if percent is None else percent)
        return self.submit(
            f"{value}% to the candidate",
            lambda: self.deployment.weight(value, "weight slider in the notebook"),
        )

    def promote(self) -> Future[Any]:
        return self.submit("promoting", lambda: self.deployment.promote("promote button in the notebook"))

    def rollback(self) -> Future[Any]:
        return self.submit(
            "rolling back", lambda: self.deployment.rollback("rollback button in the notebook")
        )

    def abort(self) -> Future[Any]:
        return self.submit("aborting", lambda: self.deployment.abort("abort button in the notebook"))

    def switch(self) -> Future[Any]:
        return self.submit("switching", lambda: self.deployment.switch("switch button in the notebook"))

    def close(self) -> None:
        self._stop.set()
        super().close()
        if self._poller is not None:
            self._poller.join(timeout=self.interval + 2)
