"""``workbench deploy`` canary verbs: the canary of ``update --strategy canary``, ``pause``,
``resume``, and the controller run in the foreground (a live view) or detached.

The controller's status lives in the deployment's state file, so these verbs act on
the same canary whichever shell, notebook or background process runs its controller.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.table import Table

from workbench.cli._common import JsonOption, console, print_json
from workbench.cli._deploy_view import number, verdict_text
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from workbench.deploy.deployment import Deployment
    from workbench.deploy.rollout.analysis import AnalysisSpec
    from workbench.deploy.rollout.controller import CanaryStatus
    from workbench.deploy.rollout.controller_process import ControllerProcess

NameArg = Annotated[str, typer.Argument(help="Deployment name.")]
_VERDICT_STYLE = {"pass": "green", "fail": "red", "inconclusive": "yellow", "skip": "dim"}
LOG_FILE = "controller.log"


def render(deployment_name: str, status: CanaryStatus | None, spec: AnalysisSpec) -> RenderableType:
    """The step plan and each rule's last value against its threshold."""
    if status is None:
        return f"{deployment_name}: no canary yet"
    plan = []
    for i, step in enumerate(status.steps):
        text = "gate" if step == "gate" else f"{step}%"
        if i == status.index:
            text = f"[bold reverse] {text} [/]"
        elif i < status.index:
            text = f"[green]{text}[/]"
        else:
            text = f"[dim]{text}[/]"
        plan.append(text)
    if status.index < 0:
        plan.insert(0, "[bold reverse] mirror [/]")
    at = "mirror" if status.index < 0 else f"step {status.index + 1}/{len(status.steps)}"
    header = (
        f"{deployment_name}: canary [bold]{status.stage.value}[/] at {status.weight}%, {at} "
        f"(tick {status.ticks}, every {spec.interval:g}s)   plan: " + " → ".join(plan)
    )
    table = Table(title=header, title_justify="left")
    for column in ("rule", "value", "threshold", "verdict", "detail"):
        table.add_column(column)
    for result in status.last:
        style = _VERDICT_STYLE.get(result.verdict, "white")
        verdict = verdict_text(result.verdict, result.sustained)
        table.add_row(
            result.rule,
            "–" if result.value is None else number(result.value),
            number(result.threshold),
            f"[{style}]{verdict}[/]",
            result.message,
        )
    table.caption = status.message
    table.caption_justify = "left"
    return Group(table)


def finished_line(name: str, done: dict[str, Any]) -> str:
    """``web: canary promoted at 15:22:42 by the controller`` or ``… rolled back at … by rule
    error_rate: …``: how a finished canary ended."""
    at = time.strftime("%H:%M:%S", time.localtime(done["at"]))
    stage = {"rolled_back": "rolled back", "aborted": "aborted"}.get(done["stage"], done["stage"])
    who = f"by rule {done['rule']}" if done["rule"] else f"by {done['by'] or 'hand'}"
    why = f": {done['message']}" if done["rule"] and done["message"] else ""
    return f"{name}: canary {stage} at {at} {who}{why}"


def start(
    deployment: Deployment,
    spec: AnalysisSpec,
    *,
    detach: bool,
    prometheus: str | None,
    json: bool,
) -> None:
    """Run the canary of a verified candidate: in the foreground, or detached."""
    from workbench.deploy import canary

    canary.remember(deployment, spec, prometheus)
    if detach:
        pid, log = spawn(deployment, prometheus)
        if json:
            print_json({"deployment": deployment.name, "pid": pid, "log": str(log)})
        else:
            console.print(f"{deployment.name}: canary controller runs as pid {pid}; log {log}")
        return
    foreground(deployment, spec, prometheus=prometheus, json=json, run=canary.run)


def foreground(deployment: Deployment, spec: AnalysisSpec | None, *, prometheus: str | None,
               json: bool, run: Any) -> None:
    from rich.live import Live

    from workbench.deploy.canary import controller

    spec = spec or controller(deployment).spec
    stop = threading.Event()
    if json:
        status = run(deployment, spec, prometheus=prometheus, stop=stop)
        print_json(status.to_dict())
        return
    if not console.is_terminal:  # piped or logged: a line per action, then the verdicts
        def said(status: CanaryStatus, action: Any) -> None:
            if action.kind not in ("hold", "none"):
                console.print(f"{time.strftime('%H:%M:%S')} canary {action.kind}: "
                              f"{action.reason or status.message}", highlight=False)

        status = run(deployment, spec, prometheus=prometheus, stop=stop, on_tick=said)
        console.print(render(deployment.name, status, spec))
        if status.stage.value == "rolled_back":
            raise typer.Exit(1)
        return
    with Live(render(deployment.name, None, spec), console=console, refresh_per_second=2) as live:
        def show(status: CanaryStatus, _action: object) -> None:
            live.update(render(deployment.name, status, spec))

        try:
            status = run(deployment, spec, prometheus=prometheus, stop=stop, on_tick=show)
        except KeyboardInterrupt:
            stop.set()
            console.print("stopped watching; the canary stays where it is "
                          f"(carry on with: workbench deploy restore {deployment.name})")
            raise typer.Exit(130) from None
        live.update(render(deployment.name, status, spec))
    if status.stage.value == "rolled_back":
        raise typer.Exit(1)


def spawn(deployment: Deployment, prometheus: str | None) -> tuple[int, Path]:
    """Start ``workbench deploy canary-run NAME`` in the background; its pid and log file."""
    from workbench.deploy.rollout.controller_process import SPAWNED_PID

    directory = deployment.context.store.directory(deployment.name)
    log = directory / LOG_FILE
    command = [sys.executable, "-m", "workbench", "deploy", "canary-run", deployment.name]
    if prometheus:
        command += ["--prometheus", prometheus]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ},
        )
    (directory / SPAWNED_PID).write_text(str(process.pid))
    return process.pid, log


def command(deployment: Deployment, verb: str, reason: str = "") -> CanaryStatus:
    """Pause, resume, promote (skip ahead), abort or roll back the deployment's canary."""
    from workbench.deploy import canary

    return canary.command(deployment, verb, reason)


def status_part(deployment: Deployment, process: ControllerProcess | None) -> list[RenderableType]:
    """What ``deploy status`` adds for a canary: while it runs, the verdicts and its
    controller process; once it ended, one line saying how and when (no controller)."""
    from rich.markup import escape

    from workbench.deploy.canary import controller
    from workbench.deploy.status import finished

    state = deployment.state
    if state.canary is None or not state.canary.started:
        return []
    done = finished(state)
    if done is not None:
        return [escape(finished_line(deployment.name, done))]
    control = controller(deployment)
    status = control.status
    lines: list[RenderableType] = [render(deployment.name, status, control.spec)]
    if process is None or process.pid is None:
        lines.append("  controller: none")
    else:
        alive = "[green]running[/]" if process.alive else "[red]gone[/]"
        lines.append(f"  controller: pid {process.pid}, {alive}")
    if not (process and process.alive):
        lines.append(f"  carry on with: workbench deploy restore {deployment.name}")
    return lines


def carry_on(deployment: Deployment, *, quiet: bool = False) -> int | None:
    """After a restore: start a detached controller for an unfinished canary none runs
    (also one whose controller died before the candidate was verified)."""
    from workbench.deploy.canary import active, running_pid

    state = deployment.state
    pending = (state.canary is not None and not state.canary.started
               and (state.rollout.in_progress or state.phase == "verified"))
    if not (active(deployment) or pending) or running_pid(deployment):
        return None
    canary = deployment.state.canary
    pid, log = spawn(deployment, None if canary is None else canary.prometheus)
    if not quiet:
        console.print(f"{deployment.name}: canary controller resumed as pid {pid}; log {log}")
    return pid


def register(app: typer.Typer, manager: Any) -> None:
    """Add ``pause``, ``resume`` and the hidden ``canary-run`` to the deploy group."""

    @app.command()
    def pause(name: NameArg, reason: Annotated[str, typer.Option(help="Why.")] = "",
              json: JsonOption = False) -> None:
        """Pause a canary at its current step (its controller keeps the weight, judges nothing)."""
        status = command(manager().get(name), "pause", reason)
        _said(name, status, json)

    @app.command()
    def resume(name: NameArg, json: JsonOption = False) -> None:
        """Resume a paused canary, or pass a gate step."""
        status = command(manager().get(name), "resume")
        _said(name, status, json)

    @app.command("canary-run", hidden=True)
    def canary_run(
        name: NameArg,
        prometheus: Annotated[str | None, typer.Option(help="Prometheus URL.")] = None,
    ) -> None:
        """Run a deployment's canary controller (what --detach starts)."""
        import logging

        from workbench.deploy import canary
        from workbench.deploy.history import set_face

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        deployment = manager().get(name)
        set_face("controller")  # after the manager, which says cli

        def said(line: str) -> None:
            print(f"{time.strftime('%H:%M:%S')} {name}: {line}", flush=True)

        def verifying(state: Any) -> None:
            said(f"{state.phase}: {state.rollout.message}")

        try:
            status = canary.run(deployment, prometheus=prometheus, on_verify=verifying)
        except WorkbenchError as exc:
            said(f"canary not started: {exc}")
            raise typer.Exit(1) from None
        said(f"canary {status.stage.value}: {status.message}")


def stage_text(stage: str) -> str:
    """A canary stage as read: ``rolled back``, not ``rolled_back``."""
    return stage.replace("_", " ")


def said(name: str, status: CanaryStatus) -> str:
    """``web: canary rolled back at 0% — rolled back by hand``."""
    return f"{name}: canary {stage_text(status.stage.value)} at {status.weight}% — {status.message}"


def _said(name: str, status: CanaryStatus, json: bool) -> None:
    if json:
        print_json(status.to_dict())
    else:
        console.print(said(name, status), highlight=False)
