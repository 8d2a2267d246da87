"""ipywidgets panels over the per-kernel session: versions, side by side, blue/green.

A panel is an object with a ``widget`` (what the notebook shows) and plain
methods (what the buttons call), so tests and scripts drive it without a browser.
Slow work (loading, comparing, a router reload) runs on the panel's own worker
thread: the kernel keeps answering while it runs, and the status line says what
is happening.
"""

from __future__ import annotations

import html
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


class Panel:
    """Base of the panels: a worker thread, a status line, a progress bar, display."""

    title = ""
    #: Paddle work must run on the extension's long-lived worker thread (see progress.py);
    #: a panel that only talks HTTP gets a thread of its own instead.
    uses_paddle = True

    def __init__(self) -> None:
        import ipywidgets as w

        self._pool = (
            None
            if self.uses_paddle
            else ThreadPoolExecutor(1, thread_name_prefix=f"workbench-{type(self).__name__}")
        )
        self.pending: Future[Any] | None = None
        self.status = w.HTML(value="", layout=w.Layout(min_height="1.6em"))
        self.progress = w.IntProgress(
            value=0, min=0, max=1, layout=w.Layout(width="260px", visibility="hidden")
        )
        self.buttons: dict[str, Any] = {}
        self.error: str | None = None
        self.closed = False
        self.widget: Any = None
        self.figures: list[Any] = []

    # -- display ---------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        for figure in self.figures:
            figure.resync()  # what changed before this display is in the figure
        return self.widget._repr_mimebundle_(**kwargs)

    def figure(self, fig: Any) -> Any:
        """A Bokeh figure as a widget of this panel."""
        from workbench_ext import plots

        wrapped = plots.widget(fig)
        self.figures.append(wrapped)
        return wrapped

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    # -- status ----------------------------------------------------------------------

    def say(self, text: str, *, error: bool = False) -> None:
        self.error = text if error else None
        color = "#c62828" if error else "#444"
        self.status.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _button(
        self,
        name: str,
        description: str,
        handler: Callable[[], Any],
        *,
        style: str = "",
        icon: str = "",
        tooltip: str = "",
    ) -> Any:
        import ipywidgets as w

        button = w.Button(
            description=description,
            button_style=style,
            icon=icon,
            tooltip=tooltip,
            layout=w.Layout(width="auto"),
        )

        def clicked(_button: Any) -> None:
            try:
                handler()
            except Exception as exc:  # a click must never raise into the comm handler
                self.say(str(exc), error=True)

        button.on_click(clicked)
        self.buttons[name] = button
        return button

    def allowed(self, action: str) -> bool:
        """Whether the button ``action`` can work now (panels narrow this per state)."""
        return True

    def _enable(self, busy: bool = False) -> None:
        """Enable each button that can work now; all are disabled while work runs."""
        for action, button in self.buttons.items():
            button.disabled = busy or not self.allowed(action)

    def _busy(self, busy: bool) -> None:
        self._enable(busy)
        self.progress.layout.visibility = "visible" if busy else "hidden"

    def submit(
        self, label: str, work: Callable[[], Any], *, done: Callable[[Any], None] | None = None
    ) -> Future[Any]:
        """Run ``work`` on the panel's thread; report errors in the status line."""
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        self.say(f"{label}…")
        self._busy(True)
        self.progress.bar_style = "info"
        self.progress.value = 0

        def run() -> Any:
            try:
                result = work()
            except Exception as exc:
                log.info("%s failed: %s", label, exc)
                self.say(f"{label} failed: {exc}", error=True)
                self.progress.bar_style = "danger"
                raise
            else:
                self.say(f"{label}: done")
                self.progress.bar_style = "success"
                if done is not None:
                    done(result)
                return result
            finally:
                self.progress.value = self.progress.max
                try:
                    self.refresh()
                except Exception:
                    log.exception("refreshing %s failed", type(self).__name__)
                self._busy(False)  # after the redraw: the buttons follow the new state

        if self._pool is None:
            from workbench_ext.progress import submit

            self.pending = submit(run)
        else:
            self.pending = self._pool.submit(run)
        return self.pending

    def wait(self, timeout: float = 120.0) -> Any:
        """Wait for the last submitted work (re-raises its error)."""
        if self.pending is None:
            return None
        return self.pending.result(timeout)

    def refresh(self) -> None:
        """Redraw from the current state."""

    def close(self) -> None:
        """Stop background work and close the widgets."""
        self.closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.widget is not None:
            self.widget.close()


def html_table(frame: Any, *, max_rows: int = 30) -> str:
    """A DataFrame as compact HTML for an ipywidgets.HTML."""
    if frame is None or len(frame) == 0:
        return "<i>nothing yet</i>"
    styled: str = frame.head(max_rows).to_html(
        float_format=lambda v: f"{v:.4g}",
        na_rep="",
        border=0,
        classes="workbench-table",
    )
    return (
        "<style>.workbench-table{border-collapse:collapse;font-size:12px;max-width:100%}"
        ".workbench-table td,.workbench-table th"
        "{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right;"
        "white-space:normal;overflow-wrap:anywhere}"
        "</style>" + styled
    )
