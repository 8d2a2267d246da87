"""Canaries from the notebook: the controller in a kernel thread, and its live view.

``%paddle deploy update NAME VERSION --strategy canary`` returns a :class:`CanaryRun`:
the controller of ``workbench.deploy.canary`` ticking on a daemon thread of the kernel
while the notebook stays usable. Its widget (and the deploy panel's canary section,
:func:`canary_html`) shows the step plan and each rule's last value against its
threshold, redrawn on every tick.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.deploy import Action, AnalysisSpec, CanaryStatus, Deployment

log = logging.getLogger(__name__)
VERDICT_COLORS = {"pass": "#2e7d32", "fail": "#c62828", "inconclusive": "#ef6c00", "skip": "#888"}
#: deployment name -> the run this kernel started (the deploy panel looks here)
RUNS: dict[str, CanaryRun] = {}


def canary_html(name: str, status: CanaryStatus | None, spec: AnalysisSpec | None = None) -> str:
    """The step plan and the rules' last values against their thresholds, as HTML."""
    if status is None:
        return ""
    steps = []
    if status.index < 0:
        steps.append("<b style='background:#1565c0;color:white;padding:0 4px'>mirror</b>")
    for i, step in enumerate(status.steps):
        text = "gate" if step == "gate" else f"{step}%"
        if i == status.index:
            steps.append(f"<b style='background:#1565c0;color:white;padding:0 4px'>{text}</b>")
        elif i < status.index:
            steps.append(f"<span style='color:#2e7d32'>{text}</span>")
        else:
            steps.append(f"<span style='color:#999'>{text}</span>")
    every = f", every {spec.interval:g} s" if spec is not None else ""
    # what the accuracy rule judges against (an OCR pipeline's pages: by CER)
    truth = (f" · judged against <code>{html.escape(spec.labelled)}</code>"
             if spec is not None and spec.labelled else "")
    rows = []
    for r in status.last:
        color = VERDICT_COLORS.get(r.verdict, "#444")
        value = "–" if r.value is None else f"{r.value:.4g}"
        rows.append(
            f"<tr><td>{html.escape(r.rule)}</td><td>{value}</td><td>{r.threshold:g}</td>"
            f"<td style='color:{color}'><b>{r.verdict}</b></td><td>{html.escape(r.message)}</td></tr>"
        )
    table = (
        "<table class='workbench-table workbench-canary' style='font-size:12px'><tr><th>rule</th>"
        "<th>value</th><th>threshold</th><th>verdict</th><th>detail</th></tr>" + "".join(rows) + "</table>"
        if rows
        else ""
    )
    return (
        f"<div><b>canary of {html.escape(name)}</b>: <b>{status.stage.value}</b> at {status.weight}% "
        f"(tick {status.ticks}{every}) · plan {' → '.join(steps)}{truth}<br>"
        f"<span style='color:#666'>{html.escape(status.message)}</span>{table}</div>"
    )


def panel_html(deployment: Deployment) -> str:
    """The deploy panel's canary section (empty when the deployment never ran a canary)."""
    from workbench.deploy import canary_controller as controller

    canary = deployment.state.canary
    if canary is None or not canary.started:
        return ""
    control = controller(deployment)
    return canary_html(deployment.name, control.status, control.spec)


class CanaryRun:
    """A canary controller ticking on a kernel thread; ``wait()`` for its end."""

    def __init__(self, deployment: Deployment, spec: AnalysisSpec, *, prometheus: str | None = None) -> None:
        import ipywidgets as w

        self.deployment = deployment
        self.spec = spec
        self.prometheus = prometheus
        self.status: CanaryStatus | None = None
        self.error: BaseException | None = None
        self.view = w.HTML()
        self.view.add_class("workbench-canary")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"workbench-canary-{deployment.name}", daemon=True
        )

    def __repr__(self) -> str:
        stage = self.status.stage.value if self.status else "starting"
        return f"<CanaryRun {self.deployment.name} {stage}>"

    def start(self) -> CanaryRun:
        RUNS[self.deployment.name] = self
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> CanaryStatus | None:
        """Block until the canary is promoted, rolled back or stopped; its last status."""
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.status

    def stop(self) -> None:
        """Stop ticking; the canary stays where it is (resume it with ``workbench deploy restore``)."""
        self._stop.set()

    def _ipython_display_(self) -> None:
        from workbench_ext._ipython import display

        display(self.view)

    def _tick(self, status: CanaryStatus, action: Action) -> None:
        self.status = status
        self.view.value = canary_html(self.deployment.name, status, self.spec)

    def _run(self) -> None:
        from workbench.deploy import run_canary

        try:
            self.status = run_canary(
                self.deployment, self.spec, prometheus=self.prometheus, stop=self._stop, on_tick=self._tick
            )
            self.view.value = canary_html(self.deployment.name, self.status, self.spec)
        except BaseException as exc:  # shown by wait(), and in the view
            self.error = exc
            self.view.value = f"<b style='color:#c62828'>canary stopped: {html.escape(str(exc))}</b>"
            log.warning("canary of %s stopped: %s", self.deployment.name, exc)


def start(deployment: Deployment, spec: AnalysisSpec, *, prometheus: str | None = None) -> CanaryRun:
    return CanaryRun(deployment, spec, prometheus=prometheus).start()


def command(deployment: Deployment, verb: str, reason: str = "") -> Any:
    """pause, resume, promote, abort or rollback the deployment's canary."""
    from workbench.deploy import canary_command

    return canary_command(deployment, verb, reason)
