"""How ``workbench deploy`` shows a deployment: status, live traffic, history, agreement.

Everything is laid out to be read in an 80-column SSH terminal: short fixed
columns in a borderless table, free text (errors, reasons) on lines of its own.
Rich is imported here and only when a command renders.
"""

from __future__ import annotations

import textwrap
import time
from typing import TYPE_CHECKING, Any

from rich.markup import escape

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from rich.console import RenderableType
    from rich.table import Table

    from workbench.deploy.history import HistoryEntry
    from workbench.deploy.state import DeploymentState
    from workbench.deploy.status import DeploymentStatus
    from workbench.deploy.traffic import Rates

PHASE_STYLE = {
    "stable": "green",
    "verified": "cyan",
    "canary": "yellow",
    "promoted": "green",
    "starting": "blue",
    "verifying": "blue",
    "rolled_back": "magenta",
    "failed": "red",
}
OUTCOME_STYLE = {"ok": "green", "failed": "red", "refused": "yellow"}
DASH = "–"


def phase(name: str) -> str:
    return f"[{PHASE_STYLE.get(name, 'white')}]{name}[/]"


def traffic(weights: Mapping[str, int]) -> str:
    return ", ".join(f"{c} {w}%" for c, w in weights.items())


def role_traffic(state: DeploymentState) -> str:
    """``stable 1.1.0 (green) 100%, previous 1.0.0 (blue) 0%``: each role's share."""
    from workbench.deploy.status import roles

    return ", ".join(f"{role} {escape(r['version'])} ({r['color']}) {r['weight']}%"
                     for role, r in roles(state).items())


def _table(*columns: str, justify_right: Sequence[str] = ()) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1))
    for column in columns:
        table.add_column(column, justify="right" if column in justify_right else "left",
                         no_wrap=True)
    return table


def _rate(value: float | None, fmt: str) -> str:
    return DASH if value is None else format(value, fmt)


def status_view(
    status: DeploymentStatus, rates: Mapping[str, Rates] | None = None, width: int = 80
) -> RenderableType:
    """One deployment: a heading, a row per colour, then its message and any errors.

    With ``rates`` (colour -> requests/s, error rate, p99 from the traffic sampler),
    the table shows live traffic instead of the instances' addresses.
    """
    from rich.console import Group

    from workbench.deploy.status import ROLE_ORDER, step

    state = status.state
    router = "[green]up[/]" if status.router_running else "[red]down[/]"
    at = step(state)
    at_step = f" step {at['index']}/{at['of']}" if at else ""
    heading = (
        f"[bold]{escape(state.name)}[/]  {escape(state.model)}  {phase(state.phase)}{at_step}  "
        f"router {router}  {escape(state.url)}"
    )
    if rates is not None:
        heading += f"  [dim]{time.strftime('%H:%M:%S')}[/]"
    live = ("req/s", "errors", "p99 ms")
    fleet = any(i.engine for i in status.instances)
    where = ("engine", "address") if fleet else ("url",)
    columns = ("colour", "role", "version", "traffic", "ready", *(live if rates is not None else where))
    table = _table(*columns, justify_right=("traffic", *live))
    notes: list[str] = []
    ordered = sorted(status.instances, key=lambda i: (
        ROLE_ORDER.index(i.role) if i.role in ROLE_ORDER else len(ROLE_ORDER), i.color))
    for i in ordered:
        ready = "yes" if i.ready else ("[red]lost[/]" if i.lost else "[red]no[/]")
        row = [f"[{i.color}]{i.color}[/]", i.role, escape(i.version), f"{i.weight}%", ready]
        if rates is not None:
            r = rates.get(i.color, {})
            error_rate = r.get("error_rate")
            row += [
                _rate(r.get("rps"), ".1f"),
                DASH if error_rate is None else f"{error_rate:.1%}",
                _rate(r.get("p99_ms"), ".1f"),
            ]
        elif fleet:
            row += [escape(engine_name(i.engine, i.replica)), escape(i.address)]
        else:
            row.append(escape(i.url))
        table.add_row(*row)
        if not i.ready and i.error:
            on = f" on {engine_name(i.engine, i.replica)}" if i.engine else ""
            notes.append(f"{i.color}{on}: {i.error}")
    lines: list[RenderableType] = [heading, table]
    if state.rollout.message:
        lines.append(_wrapped(state.rollout.message, width))
    lines.extend(f"[red]{_wrapped(note, width)}[/]" for note in notes)
    return Group(*lines)


def engine_name(url: str, replica: int = 0) -> str:
    """An engine as a short column: its host (``gpu1``), ``#N`` for a further replica."""
    import urllib.parse

    host = urllib.parse.urlsplit(url).hostname or url or "default"
    return host + (f" #{replica}" if replica else "")


def _wrapped(text: str, width: int, indent: str = "") -> str:
    return escape(
        textwrap.fill(text, width=max(20, width), initial_indent=indent, subsequent_indent=indent)
    )


def verdict_text(verdict: str, sustained: bool) -> str:
    """A rule's verdict as read: a fail that rolls back now says so; one that does not
    yet says the canary holds."""
    if verdict != "fail":
        return verdict
    return "fail → rollback" if sustained else "fail, holding"


def number(value: float) -> str:
    """A measured value for a table: ``208,400``, ``412``, ``12.3``, ``0.0123`` (never
    ``2.084e+05``)."""
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100 or value == int(value):
        return f"{value:.0f}"
    if size >= 0.001:
        return f"{value:.3g}"
    return f"{value:.2e}" if value else "0"


def verdicts(results: Sequence[Mapping[str, Any]]) -> str:
    """A canary tick's verdicts in one line: ``error_rate pass 0.004 (max 0.03), ...``."""
    parts = []
    for r in results:
        value = r.get("value")
        shown = "–" if value is None else number(float(value))
        parts.append(f"{r.get('rule')} {verdict_text(str(r.get('verdict')), bool(r.get('sustained')))}"
                     f" {shown} (threshold {number(float(r.get('threshold', 0.0)))})")
    return "; ".join(parts)


def history_view(name: str, entries: Sequence[HistoryEntry], width: int = 80) -> RenderableType:
    """One line per action, oldest first (time, action, outcome, phase, traffic to stable and
    candidate, versions stable → candidate); below it who acted and why."""
    from rich.console import Group

    header = ("time", "action", "outcome", "phase", "stable/cand", "versions")
    rows: list[tuple[str, ...]] = []
    for e in entries:
        versions = e.stable_version or ""
        if e.candidate_version:
            versions += f" → {e.candidate_version}"
        stable, candidate = e.split
        rows.append(
            (time.strftime("%H:%M:%S", time.localtime(e.time)), e.action, e.outcome, e.phase,
             f"{stable}/{candidate}", versions)
        )
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
    fixed = sum(widths[:-1]) + 2 * (len(header) - 1)
    widths[-1] = max(8, min(widths[-1], width - fixed))
    indent = " " * (widths[0] + 2)

    def line(cells: Sequence[str], styles: Sequence[str] = ()) -> str:
        out = []
        for k, (cell, size) in enumerate(zip(cells, widths, strict=False)):
            text = cell if len(cell) <= size else cell[: size - 1] + "…"
            padded = escape(text.ljust(size) if k < len(cells) - 1 else text)
            style = styles[k] if k < len(styles) else ""
            out.append(f"[{style}]{padded}[/]" if style else padded)
        return "  ".join(out)

    lines: list[str] = [f"[bold]history of {escape(name)}[/]", line(header, ["bold"] * 6)]
    day = ""
    for e, row in zip(entries, rows, strict=True):
        today = time.strftime("%Y-%m-%d", time.localtime(e.time))
        if today != day:
            lines.append(f"[dim]{today}[/]")
            day = today
        lines.append(line(row, ["", "", OUTCOME_STYLE.get(e.outcome, ""), PHASE_STYLE.get(e.phase, "")]))
        note = ": ".join(filter(None, (f"by {e.by}" if e.by else "", e.reason)))
        if note:
            lines.append(f"[dim]{_wrapped(note, width, indent)}[/]")
        results = e.details.get("results") if e.details else None
        if results:
            lines.append(f"[dim]{_wrapped('rules: ' + verdicts(results), width, indent)}[/]")
    if not entries:
        lines.append("no history")
    return Group(*lines)


def agreement_view(report: Mapping[str, Any]) -> RenderableType:
    """The agreement check of a candidate with stable: a verdict line, one row per output."""
    from rich.console import Group

    verdict = str(report.get("verdict", "passed" if report.get("passed") else "failed"))
    color = "green" if report.get("passed") else "yellow" if report.get("inconclusive") else "red"
    interval = report.get("interval")
    heading = (
        f"agreement of {escape(str(report.get('candidate_version')))} (candidate) with "
        f"{escape(str(report.get('stable_version')))} (stable): [{color}]{escape(verdict)}[/]"
        + ("" if not interval else " (95% interval {:.1%}..{:.1%})".format(*interval))
    )
    numbers = ("rows", "top-1 agreement", "max |diff|", "mean |diff|")
    table = _table("output", *numbers, justify_right=numbers)
    for output in report.get("outputs", []):
        top1 = output.get("top1")
        table.add_row(
            escape(str(output["name"])),
            str(output["rows"]),
            "n/a" if top1 is None else f"{top1:.1%}",
            f"{output['max_abs_diff']:.4g}",
            f"{output['mean_abs_diff']:.4g}",
        )
    lines: list[RenderableType] = [heading, table,
                                   escape("inputs: " + ", ".join(report.get("sources", [])))]
    lines.extend(f"[red]errors: {escape(e)}[/]" for e in report.get("errors", []))
    return Group(*lines)


def done_line(state: DeploymentState, what: str) -> str:
    """``web: promoted 1.1.0 — phase promoted; stable 1.1.0 (green) 100%, previous 1.0.0 (blue) 0%``."""
    return (f"{escape(state.name)}: {escape(what)} — phase {phase(state.phase)}; "
            f"{role_traffic(state)}")
