"""Rich display of workbench objects in IPython (HTML in notebooks, short text in terminals).

The formatters are registered on the shell when the extension loads and removed
when it unloads; the workbench's own classes stay free of IPython.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from workbench import LoadedVersion, ModelRepository, Prediction, VersionHub

if TYPE_CHECKING:
    from collections.abc import Callable

    from IPython.lib.pretty import RepresentationPrinter

MAX_ROWS = 10


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='workbench'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# -- text -----------------------------------------------------------------------------


def prediction_text(pred: Prediction) -> str:
    lines = [f"Prediction from {pred.version} in {pred.seconds * 1000:.2f} ms"]
    for name, array in pred.outputs.items():
        lines.append(f"  {name}: {array.dtype}{list(array.shape)}")
        if array.ndim == 2 and array.shape[1] > 1:
            top = array.argmax(axis=1)[:MAX_ROWS]
            lines.append(f"    top-1: {top.tolist()}" + (" ..." if len(array) > MAX_ROWS else ""))
    return "\n".join(lines)


def loaded_text(lv: LoadedVersion) -> str:
    return (
        f"{lv.model}:{lv.version} on {lv.device} "
        f"({lv.state.value}, {lv.memory}, loaded in {lv.load_seconds:.2f}s)"
    )


def hub_text(hub: VersionHub) -> str:
    active = hub.active.version if hub.active else "none"
    loaded = ", ".join(str(lv.version) for lv in hub.loaded) or "none"
    return f"{hub.model}: active {active}; loaded {loaded}"


def repository_text(repo: ModelRepository) -> str:
    models = repo.models()
    lines = [f"model repository {repo.root}"]
    for model in models:
        aliases = ", ".join(f"{a}→{v}" for a, v in repo.aliases(model).items())
        lines.append(f"  {model}: {', '.join(str(v) for v in repo.versions(model))} ({aliases})")
    if not models:
        lines.append("  (no models)")
    return "\n".join(lines)


def status_text(status: Any) -> str:
    data = status.to_dict()
    lines = [
        f"deployment {data['name']} ({data['model']}) at {data['url']}: {data['phase']}"
        + (" — healthy" if data["healthy"] else " — NOT healthy"),
    ]
    if data.get("message"):
        lines.append(f"  {data['message']}")
    for inst in data["instances"]:
        ready = "ready" if inst["ready"] else (inst["error"] or "not ready")
        lines.append(
            f"  {inst['color']:<5} {inst['role']:<9} {inst['version']:<10} {inst['weight']:>3}%  {ready}"
        )
    return "\n".join(lines)


# -- html -----------------------------------------------------------------------------


def prediction_html(pred: Prediction) -> str:
    parts = [f"<p>Prediction from <b>{pred.version}</b> in {pred.seconds * 1000:.2f} ms</p>"]
    for name, array in pred.outputs.items():
        parts.append(f"<p><code>{html.escape(name)}</code>: {array.dtype}{list(array.shape)}</p>")
        if array.ndim == 2 and array.shape[1] > 1:
            top = array.argmax(axis=1)
            prob = array.max(axis=1)
            rows = [[i, int(top[i]), f"{float(prob[i]):.4f}"] for i in range(min(len(array), MAX_ROWS))]
            if len(array) > MAX_ROWS:
                rows.append(["…", "…", "…"])
            parts.append(_table(["row", "top-1", "score"], rows))
    return "".join(parts)


def loaded_html(lv: LoadedVersion) -> str:
    stats = lv.stats()
    rows: list[list[Any]] = [
        ["model", lv.model],
        ["version", str(lv.version)],
        ["device", lv.device],
        ["state", lv.state.value],
        ["memory", str(lv.memory)],
        ["workers", lv.workers],
        ["load time", f"{lv.load_seconds:.2f} s"],
        ["served", stats["served"]],
        ["inputs", ", ".join(str(s) for s in lv.inputs)],
        ["outputs", ", ".join(str(s) for s in lv.outputs)],
    ]
    return _table(["", ""], rows)


def hub_html(hub: VersionHub) -> str:
    rows = [
        [
            ("● " if lv is hub.active else "") + str(lv.version),
            lv.device,
            lv.state.value,
            str(lv.memory),
            lv.stats()["served"],
        ]
        for lv in hub.loaded
    ]
    return f"<p>hub <b>{html.escape(hub.model)}</b></p>" + _table(
        ["version", "device", "state", "memory", "served"], rows
    )


def repository_html(repo: ModelRepository) -> str:
    rows = []
    for model in repo.models():
        aliases = ", ".join(f"{a}→{v}" for a, v in repo.aliases(model).items())
        rows.append([model, ", ".join(str(v) for v in repo.versions(model)), aliases])
    return f"<p>model repository <code>{html.escape(str(repo.root))}</code></p>" + _table(
        ["model", "versions", "aliases"], rows
    )


def status_html(status: Any) -> str:
    data = status.to_dict()
    health = "healthy" if data["healthy"] else "<span style='color:#c00'>not healthy</span>"
    rows = [
        [
            i["color"],
            i["role"],
            i["version"],
            f"{i['weight']}%",
            "ready" if i["ready"] else (i["error"] or "not ready"),
            i["url"],
        ]
        for i in data["instances"]
    ]
    message = f"<p>{html.escape(data['message'])}</p>" if data.get("message") else ""
    return (
        f"<p>deployment <b>{html.escape(data['name'])}</b> ({html.escape(data['model'])}) at "
        f"<code>{html.escape(data['url'])}</code>: <b>{html.escape(data['phase'])}</b>, {health}</p>"
        + message
        + _table(["colour", "role", "version", "traffic", "health", "url"], rows)
    )


def history_rows(entries: Any) -> list[dict[str, Any]]:
    return [
        {
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time)),
            "action": e.action,
            "outcome": e.outcome,
            "stable": e.stable_version,
            "candidate": e.candidate_version,
            "phase": e.phase,
            "weights": ", ".join(f"{c} {w}%" for c, w in dict(e.weights).items()),
            "reason": e.reason,
        }
        for e in entries
    ]


# -- registration ---------------------------------------------------------------------


def _plain(fn: Callable[[Any], str]) -> Callable[[Any, RepresentationPrinter, bool], None]:
    def printer(obj: Any, p: RepresentationPrinter, cycle: bool) -> None:
        cast("Any", p).text(fn(obj))

    return printer


def _types() -> list[tuple[type, Callable[[Any], str], Callable[[Any], str]]]:
    types: list[tuple[type, Callable[[Any], str], Callable[[Any], str]]] = [
        (Prediction, prediction_html, prediction_text),
        (LoadedVersion, loaded_html, loaded_text),
        (VersionHub, hub_html, hub_text),
        (ModelRepository, repository_html, repository_text),
    ]
    try:
        from workbench.deploy import DeploymentStatus

        types.append((DeploymentStatus, status_html, status_text))
    except ImportError:  # pragma: no cover - the deploy layer ships with the package
        pass
    return types


def register(shell: Any) -> None:
    formatters = shell.display_formatter.formatters
    for cls, to_html, to_text in _types():
        formatters["text/html"].for_type(cls, to_html)
        formatters["text/plain"].for_type(cls, _plain(to_text))


def unregister(shell: Any) -> None:
    formatters = shell.display_formatter.formatters
    for cls, _, _ in _types():
        for mime in ("text/html", "text/plain"):
            try:
                formatters[mime].pop(cls)
            except KeyError:
                pass


def short_array(value: Any) -> str:
    array = np.asarray(value)
    return f"{array.dtype}{list(array.shape)}"
