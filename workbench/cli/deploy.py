"""``workbench deploy``: blue/green deployments from a shell.

A thin face over :mod:`workbench.deploy.manager`; the notebook extension calls
the same API and reads the same state, so what one does the other sees.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from workbench.cli._common import JsonOption, RepoOption, console, print_json
from workbench.deploy.rollout.phases import DEFAULT_MIN_AGREEMENT
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.state import DeploymentState
    from workbench.deploy.status import DeploymentStatus

app = typer.Typer(
    help="Blue/green deployments: one router in front of two colours of serving instances.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Deployment name (lowercase letters, digits, '-').")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded in the history.")]


def register(parent: typer.Typer) -> None:
    """Add the ``deploy`` group to the workbench CLI."""
    parent.add_typer(app, name="deploy")


def _manager(repo: Path | None = None) -> DeploymentManager:
    from workbench.deploy.manager import DeploymentManager

    return DeploymentManager(repo=repo)


# -- rendering ----------------------------------------------------------------------------

_PHASE_STYLE = {
    "stable": "green",
    "verified": "cyan",
    "canary": "yellow",
    "promoted": "green",
    "starting": "blue",
    "verifying": "blue",
    "rolled_back": "magenta",
    "failed": "red",
}


def _phase(phase: str) -> str:
    return f"[{_PHASE_STYLE.get(phase, 'white')}]{phase}[/]"


def _status_table(status: DeploymentStatus) -> Table:
    state = status.state
    router = "[green]up[/]" if status.router_running else "[red]down[/]"
    title = (
        f"{state.name}: {state.model} at {state.url}  phase {_phase(state.phase)}  router {router}"
    )
    table = Table(title=title, title_justify="left")
    for column in ("colour", "role", "version", "traffic", "url", "ref", "running", "ready"):
        table.add_column(column)
    for i in status.instances:
        table.add_row(
            f"[{i.color}]{i.color}[/]",
            i.role,
            i.version,
            f"{i.weight}%",
            i.url,
            i.ref[:12],
            "yes" if i.running else "[red]no[/]",
            "yes" if i.ready else f"[red]no[/] {i.error[:40]}",
        )
    if state.rollout.message:
        table.caption = state.rollout.message
        table.caption_justify = "left"
    return table


def _interval(report: dict[str, Any]) -> str:
    interval = report.get("interval")
    return "" if not interval else " ({:.1%}..{:.1%})".format(*interval)


def _agreement_table(report: dict[str, Any]) -> Table:
    verdict = str(report.get("verdict", "passed" if report.get("passed") else "failed"))
    colour = "green" if report.get("passed") else "yellow" if report.get("inconclusive") else "red"
    verdict = f"[{colour}]{verdict}[/]"
    table = Table(
        title=(
            f"agreement of {report.get('candidate_version')} (candidate) with "
            f"{report.get('stable_version')} (stable): {verdict}"
        ),
        title_justify="left",
    )
    for column in ("output", "rows", "top-1 agreement", "max |diff|", "mean |diff|"):
        table.add_column(column)
    for output in report.get("outputs", []):
        top1 = output.get("top1")
        table.add_row(
            str(output["name"]),
            str(output["rows"]),
            "n/a" if top1 is None else f"{top1:.1%}" + _interval(report),
            f"{output['max_abs_diff']:.4g}",
            f"{output['mean_abs_diff']:.4g}",
        )
    sources = ", ".join(report.get("sources", []))
    errors = "; ".join(report.get("errors", []))
    table.caption = f"inputs: {sources}" + (f"\nerrors: {errors}" if errors else "")
    table.caption_justify = "left"
    return table


def _done(state: DeploymentState, what: str, json: bool) -> None:
    if json:
        print_json(state.to_dict())
        return
    weights = ", ".join(f"{c} {w}%" for c, w in state.weights.items())
    console.print(f"{state.name}: {what} — phase {_phase(state.phase)}; traffic {weights}")


# -- commands -----------------------------------------------------------------------------


@app.command()
def create(
    name: NameArg,
    model: Annotated[str, typer.Option("--model", "-m", help="Model to serve.")],
    version: Annotated[
        str, typer.Option("--version", "-v", help="Version or alias for blue.")
    ] = "stable",
    backend: Annotated[
        str, typer.Option(help="Where instances run: process (local, default) or docker.")
    ] = "process",
    docker_host: Annotated[
        str | None,
        typer.Option(help="Docker engine for --backend docker, e.g. ssh://user@gpu-box."),
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Workbench image for --backend docker.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Public port of the router [default: a free port].")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the router listens on.")] = "127.0.0.1",
    device: Annotated[str, typer.Option(help="cpu or gpu:N for the instances.")] = "cpu",
    workers: Annotated[int, typer.Option(help="Predictor workers per instance.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for blue to get ready.")] = 180.0,
    repo: RepoOption = None,
    json: JsonOption = False,
) -> None:
    """Start MODEL VERSION as blue and put the router in front of it."""
    manager = _manager(repo)
    with console.status(f"starting {model} {version} as blue of {name}…", spinner="dots"):
        deployment = manager.create(
            name,
            model,
            version,
            backend=backend,
            docker_host=docker_host,
            port=port,
            host=host,
            device=device,
            workers=workers,
            timeout=timeout,
            backend_options={"image": image} if image else None,
        )
    state = deployment.state
    if json:
        print_json(state.to_dict())
        return
    console.print(f"{name}: {model} {state.stable_version} live on blue at [bold]{state.url}[/]")


@app.command()
def update(
    name: NameArg,
    version: Annotated[str, typer.Option("--version", "-v", help="Version or alias to roll out.")],
    sample: Annotated[
        Path | None,
        typer.Option(help="Extra agreement inputs: .npz (one array per input) or .npy."),
    ] = None,
    auto_promote: Annotated[
        bool, typer.Option("--auto-promote", help="Promote as soon as verification passes.")
    ] = False,
    min_agreement: Annotated[
        float,
        typer.Option(help="Top-1 agreement (0..1) the candidate needs with stable; 0: no check."),
    ] = DEFAULT_MIN_AGREEMENT,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for verification.")] = 180.0,
    json: JsonOption = False,
) -> None:
    """Start VERSION on the other colour, verify it, report, then wait for `promote`.

    Verification: readiness, deep health, and output agreement with stable on the
    manifests' samples (plus --sample). Stable keeps all traffic meanwhile.
    """
    from workbench.errors import RolloutError

    deployment = _manager().get(name)
    last = {"message": ""}

    def progress(state: DeploymentState) -> None:
        message = state.rollout.message
        if message and message != last["message"] and not json:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {_phase(state.phase)}: {message}")
            last["message"] = message

    error: RolloutError | None = None
    with console.status(f"rolling out {version} to {name}…", spinner="dots"):
        try:
            state = deployment.update(
                version,
                sample_file=sample,
                auto_promote=auto_promote,
                min_agreement=min_agreement,
                timeout=timeout,
                on_tick=progress,
            )
        except RolloutError as exc:
            error = exc
            state = deployment.state
    if json:
        print_json(state.to_dict())
    else:
        if state.agreement:
            console.print(_agreement_table(dict(state.agreement)))
        if error is None:
            hint = "" if auto_promote else f" — promote with: workbench deploy promote {name}"
            _done(state, f"{state.candidate_version} verified{hint}", False)
    if error is not None:
        raise error


@app.command()
def promote(name: NameArg, reason: ReasonOption = "", json: JsonOption = False) -> None:
    """All traffic to the candidate; stable stays warm as the rollback target."""
    state = _manager().get(name).promote(reason)
    _done(state, f"promoted {state.candidate_version}", json)


@app.command()
def rollback(name: NameArg, reason: ReasonOption = "", json: JsonOption = False) -> None:
    """All traffic back to stable (one router reload), then stop the candidate."""
    state = _manager().get(name).rollback(reason)
    _done(state, f"rolled back to {state.stable_version}", json)


@app.command()
def switch(name: NameArg, reason: ReasonOption = "", json: JsonOption = False) -> None:
    """Flip all traffic to the other colour; both stay warm."""
    state = _manager().get(name).switch(reason)
    _done(state, f"switched to {state.rollout.live}", json)


@app.command()
def weight(
    name: NameArg,
    percent: Annotated[int, typer.Argument(min=0, max=100, help="Share of traffic to the candidate.")],
    reason: ReasonOption = "",
    json: JsonOption = False,
) -> None:
    """Send PERCENT of traffic to the candidate (sticky per x-user-id when present)."""
    state = _manager().get(name).weight(percent, reason)
    _done(state, f"{percent}% to {state.candidate_version}", json)


@app.command()
def abort(name: NameArg, reason: ReasonOption = "", json: JsonOption = False) -> None:
    """Drop the candidate before it was promoted; stable keeps all traffic."""
    state = _manager().get(name).abort(reason)
    _done(state, "candidate dropped", json)


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="Deployment [default: all].")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
    count: Annotated[
        int | None, typer.Option(help="With --watch: stop after this many refreshes.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Phase, traffic split and live health of one deployment (or all)."""
    manager = _manager()

    def snapshot() -> list[DeploymentStatus]:
        names = [name] if name else manager.names()
        return [manager.get(n).status() for n in names]

    def render(statuses: list[DeploymentStatus]) -> RenderableType:
        from rich.console import Group

        if not statuses:
            return "no deployments (create one with: workbench deploy create NAME --model M)"
        return Group(*(_status_table(s) for s in statuses))

    if json and not watch:
        statuses = snapshot()
        print_json(statuses[0].to_dict() if name else [s.to_dict() for s in statuses])
        return
    if not watch:
        console.print(render(snapshot()))
        return
    from rich.live import Live

    shown = 0
    try:
        if json:
            while count is None or shown < count:
                print_json([s.to_dict() for s in snapshot()])
                shown += 1
                time.sleep(interval)
            return
        with Live(render(snapshot()), console=console, auto_refresh=False) as live:
            shown = 1
            while count is None or shown < count:
                time.sleep(interval)
                live.update(render(snapshot()), refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass


@app.command()
def restore(
    name: Annotated[str | None, typer.Argument(help="Deployment [default: all].")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each instance.")] = 180.0,
    json: JsonOption = False,
) -> None:
    """Restart what should run but does not (after a host or container restart)."""
    manager = _manager()
    names = [name] if name else manager.names()
    states = []
    for each in names:
        with console.status(f"restoring {each}…", spinner="dots"):
            state = manager.get(each).restore(timeout)
        states.append(state)
        if not json:
            _done(state, state.history[-1].reason, False)
    if json:
        print_json([s.to_dict() for s in states])


@app.command()
def history(
    name: NameArg,
    limit: Annotated[int | None, typer.Option(help="Only the last N entries.")] = None,
    json: JsonOption = False,
) -> None:
    """What was done to a deployment: time, action, versions, outcome, reason."""
    entries = _manager().get(name).history(limit)
    if json:
        print_json([e.to_dict() for e in entries])
        return
    table = Table(title=f"history of {name}", title_justify="left")
    for column in ("time", "action", "outcome", "stable", "candidate", "phase", "traffic",
                   "reason"):
        table.add_column(column)
    style = {"ok": "green", "failed": "red", "refused": "yellow"}
    for e in entries:
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time)),
            e.action,
            f"[{style.get(e.outcome, 'white')}]{e.outcome}[/]",
            e.stable_version or "",
            e.candidate_version or "",
            e.phase,
            " / ".join(f"{c} {w}%" for c, w in e.weights.items()),
            e.reason,
        )
    console.print(table)


@app.command()
def logs(
    name: NameArg,
    color: Annotated[str, typer.Argument(help="blue or green.")],
    tail: Annotated[int, typer.Option(help="Number of lines.")] = 200,
) -> None:
    """The last lines of one colour's serving instance output."""
    if color not in ("blue", "green"):
        raise typer.BadParameter("colour must be blue or green")
    typer.echo(_manager().get(name).logs(color, tail), nl=False)  # type: ignore[arg-type]


@app.command()
def delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Delete even when its state file is unreadable.")
    ] = False,
) -> None:
    """Stop the router and both colours, then remove the deployment's state."""
    manager = _manager()
    deployment = manager.get(name)
    if not yes:
        try:
            where = deployment.url
        except WorkbenchError:
            if not force:
                raise
            where = "unreadable state"
        typer.confirm(f"delete deployment {name} ({where})?", abort=True)
    deployment.delete(force=force)
    console.print(f"{name}: deleted")
