"""The version panel: the repository's versions, what is loaded, and buttons to change it.

Shows every version of a model with its aliases and metrics, the versions loaded in
this kernel with device, memory and state (in process isolation each worker
process's pid, state and memory), and Load / Unload / Use / Rollback buttons, with
the device and the isolation to load in. It follows the session's hub events, so
``%paddle use`` in another cell, or a worker's death and restart, redraws it too.
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any

from workbench_ext import ops, plots
from workbench_ext.panels import Panel, html_table

if TYPE_CHECKING:
    from concurrent.futures import Future

    from workbench import HubEvent
    from workbench_ext.state import Session

log = logging.getLogger(__name__)


class VersionsPanel(Panel):
    """Versions of one model: load, unload, use, rollback."""

    def __init__(self, session: Session, model: str) -> None:
        import ipywidgets as w

        super().__init__()
        session.repo.versions(model)  # ModelNotFoundError early
        self.session = session
        self.model = model
        self.header = w.HTML()
        self.repository = w.HTML()
        self.loaded = w.HTML()
        self.version = w.Dropdown(description="version", layout=w.Layout(width="220px"))
        from workbench.runtime import available_devices

        self.device = w.Dropdown(  # only the devices Paddle reports on this machine
            description="device",
            options=list(dict.fromkeys([session.device, *available_devices()])),
            value=session.device,
            layout=w.Layout(width="180px"),
        )
        self.isolation = w.Dropdown(  # auto: the hub's own (worker processes on a GPU)
            description="isolation",
            options=("auto", "process", "thread"),
            value="auto",
            tooltip="process: the version runs in its own worker process; Unload frees its memory",
            layout=w.Layout(width="200px"),
        )
        controls = w.HBox(
            [
                self.version,
                self.device,
                self.isolation,
                self._button("load", "Load", lambda: self.load(), style="primary", icon="upload"),
                self._button("unload", "Unload", lambda: self.unload(), icon="trash"),
                self._button("use", "Use", lambda: self.use(), style="success", icon="exchange"),
                self._button("rollback", "Rollback", lambda: self.rollback(), style="warning", icon="undo"),
                self._button("refresh", "", lambda: self.refresh(), icon="refresh", tooltip="Refresh"),
            ],
            layout=w.Layout(flex_flow="row wrap", align_items="center"),
        )
        self.memory = plots.memory_plot()
        self.plot = self.figure(self.memory.figure)
        self.widget = w.VBox(
            [
                self.header,
                w.HTML("<b>Repository</b>"),
                self.repository,
                w.HTML("<b>Loaded in this kernel</b>"),
                self.loaded,
                controls,
                w.HBox([self.progress, self.status]),
                self.plot,
            ],
            layout=w.Layout(border="1px solid #ddd", padding="8px"),
        )
        self.widget.add_class("workbench-versions-panel")
        self._unsubscribe = session.subscribe(self._on_event)
        self.refresh()

    def __repr__(self) -> str:
        return f"<VersionsPanel {self.model}>"

    # -- state -----------------------------------------------------------------------

    @property
    def hub(self) -> Any:
        return self.session.hub(self.model)

    def _on_event(self, event: HubEvent) -> None:
        if event.model == self.model and not self.closed:
            self.refresh()

    def refresh(self) -> None:
        repo = self.session.repo
        versions = [str(v) for v in repo.versions(self.model)]
        aliases = repo.aliases(self.model)
        options = [*versions, *[a for a in aliases if a not in versions]]
        current = self.version.value
        self.version.options = options
        if current in options:
            self.version.value = current
        elif options:
            self.version.value = aliases.get("stable", aliases.get("latest", options[0])).__str__()
        hub = self.session.hubs.get(self.model)
        active = str(hub.active.version) if hub is not None and hub.active is not None else None
        self.header.value = (
            f"<h3 style='margin:2px 0'>{html.escape(self.model)}</h3>"
            f"<span style='color:#666'>repository <code>{html.escape(str(repo.root))}</code> · "
            f"active: <b>{html.escape(active or 'none')}</b></span>"
        )
        self.repository.value = html_table(ops.versions_table(self.session, self.model))
        if hub is not None and hub.loaded:
            frame = ops.loaded_table(hub)
            self.loaded.value = html_table(compact(frame)) + workers_html(frame)
            held = frame["memory_scope"] == "worker"  # in-kernel versions share the kernel's memory
            mib = [m if h else None for m, h in zip(frame["memory_mib"], held, strict=True)]
            self.memory.update(list(frame.index), mib, active)
        else:
            self.loaded.value = "<i>no version loaded; pick one and press Load</i>"
            self.memory.update([], [], None)

    # -- actions (what the buttons call) ---------------------------------------------

    def _target(self, ref: str | None) -> str:
        ref = ref or self.version.value
        if not ref:
            raise ValueError("pick a version first")
        return str(self.session.repo.resolve(self.model, ref))

    def load(self, ref: str | None = None, *, activate: bool | None = None) -> Future[Any]:
        version = self._target(ref)
        device = self.device.value
        isolation = None if self.isolation.value == "auto" else self.isolation.value
        return self.submit(
            f"loading {self.model}:{version} on {device}",
            lambda: self.hub.load(version, device=device, activate=activate, isolation=isolation),
        )

    def unload(self, ref: str | None = None) -> Future[Any]:
        version = self._target(ref)
        return self.submit(f"unloading {self.model}:{version}", lambda: self.hub.unload(version))

    def use(self, ref: str | None = None) -> Future[Any]:
        version = self._target(ref)
        return self.submit(f"switching {self.model} to {version}", lambda: self.hub.use(version))

    def rollback(self) -> Future[Any]:
        return self.submit(f"rolling {self.model} back", lambda: self.hub.rollback())

    def close(self) -> None:
        self._unsubscribe()
        super().close()


#: The loaded-versions columns the panel shows (``%paddle list --loaded`` has them all).
COLUMNS = {
    "active": "active",
    "device": "device",
    "isolation": "isolation",
    "state": "state",
    "memory_mib": "RSS MiB",
    "served": "served",
    "failed": "failed",
    "p99_ms": "p99 ms",
}


def compact(frame: Any) -> Any:
    """The loaded-versions table narrowed to what fits beside the sidebar at 1400 px.

    ``RSS MiB`` is the resident memory of the version's worker processes; a version
    loaded in the kernel (thread isolation) shares the kernel's memory, so it has none
    of its own to show.
    """
    shown = frame[list(COLUMNS)].rename(columns=COLUMNS).astype(object)
    shown = shown.where(shown.notna(), "")  # no latency yet: blank, not "None"
    in_kernel = frame["memory_scope"] != "worker"
    shown["RSS MiB"] = shown["RSS MiB"].where(~in_kernel, "in kernel")
    return shown


def workers_html(frame: Any) -> str:
    """One line per version in process isolation: its worker processes (pid, state, RSS)."""
    lines = [
        f"<div><code>{html.escape(str(version))}</code> workers: {html.escape(str(text))}</div>"
        for version, text in frame["worker_processes"].items()
        if text
    ]
    return f"<div style='font-size:11px;color:#555;margin-top:2px'>{''.join(lines)}</div>" if lines else ""
