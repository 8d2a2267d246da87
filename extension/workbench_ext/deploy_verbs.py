"""``%paddle deploy ACTION``: blue/green deployments through workbench.deploy's Python API.

The same calls as ``workbench deploy``; the persisted state is shared, so a
deployment created here shows up in an SSH shell and the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.deploy import DEFAULT_MIN_AGREEMENT, verification_threshold
from workbench_ext._args import argument, magic_arguments
from workbench_ext.progress import run_with_progress
from workbench_ext.verb import Verb, verb

if TYPE_CHECKING:
    import argparse

    import pandas as pd

    from workbench_ext.verb import Call

#: The deploy verbs, dispatched by ``%paddle deploy ACTION``.
DEPLOY_VERBS: dict[str, Verb] = {}

reason = argument("--reason", default="", help="Why (recorded in the history).")
name = argument("name", help="The deployment.")
#: The verification checks of an update, in the order the rollout runs them.
UPDATE_STEPS = {
    "ready": "wait until ready",
    "deep_health": "deep health check",
    "agreement": "agreement with stable",
}


def _deployment(call: Call, deployment: str) -> Any:
    return call.session.deployments.get(deployment)


@verb("create", DEPLOY_VERBS)
@magic_arguments(name="paddle deploy create")
@name
@argument("ref", help="What blue serves: digits@stable, digits:1.0.0.")
@argument(
    "--port", type=int, default=None, help="The router's public port on 127.0.0.1 (default: a free one)."
)
@argument("--backend", default="process", help="process (local, default) or docker.")
@argument("--docker-host", default=None, help="Docker engine URL (e.g. ssh://user@gpu-box).")
@argument("--device", default="cpu", help="Device of the serving instances (cpu, gpu:N).")
@argument("--workers", type=int, default=1, help="Predictor clones per instance.")
@argument("--isolation", choices=("process", "thread"), default=None,
          help="process (worker processes, serve's default) or thread (in the instance's "
               "process: a pipeline starts in seconds); candidates inherit it.")
@argument("--timeout", type=float, default=180.0, help="Seconds to wait for blue to be healthy.")
@argument("-q", "--quiet", action="store_true", help="No progress bar.")
def cmd_create(call: Call, args: argparse.Namespace) -> Any:
    """Start a version as blue and put the router in front of it."""
    model, ref = call.session.parse(args.ref)
    if ref is None:  # a bare model deploys its stable version (latest when there is no such alias)
        ref = "stable" if "stable" in call.session.repo.aliases(model) else "latest"
    manager = call.session.deployments
    deployment = run_with_progress(
        lambda: manager.create(
            args.name,
            model,
            ref or "latest",
            backend=args.backend,
            docker_host=args.docker_host,
            port=args.port,
            device=args.device,
            workers=args.workers,
            isolation=args.isolation,
            timeout=args.timeout,
        ),
        desc=f"create {args.name}",
        steps=[f"start {model}:{ref or 'latest'} as blue and the router in front of it"],
        disable=args.quiet,
    )
    return deployment.status()


@verb("update", DEPLOY_VERBS)
@magic_arguments(name="paddle deploy update")
@name
@argument("version", help="The candidate version or alias (green, or whichever colour is free).")
@argument("--sample-file", default=None, help="Extra agreement inputs (.npz or .npy).")
@argument("--min-agreement", type=float, default=None,
          help=f"Top-1 agreement with stable needed before traffic (0..1); 0: no check "
               f"[default: {DEFAULT_MIN_AGREEMENT}; 0 with --strategy canary].")
@argument("--auto-promote", action="store_true", help="Promote at once when verification passes.")
@argument("--timeout", type=float, default=180.0, help="Seconds for the candidate to become healthy.")
@argument(
    "--strategy", default="blue-green", choices=["blue-green", "canary"], help="canary: step by step, judged."
)
@argument("--steps", default=None, help="Canary weights, 'gate' waits for resume: 5,25,gate,100.")
@argument("--interval", default=None, help="Canary analysis interval: 30s, 2m.")
@argument("--analysis", default=None, help="Canary analysis file (.toml or .yaml).")
@argument("--labelled", default=None,
          help="Canary accuracy rule's labelled set: .npz of inputs and 'labels'; an OCR "
               "pipeline: a directory of images and texts.json (judged by CER). Checked "
               "before any traffic moves.")
@argument("--synthetic", type=float, default=None, help="Sample requests/s sent to the canary.")
@argument("--mirror", type=int, default=None, help="Mirror this %% of stable's requests first.")
@argument("--prometheus", default=None, help="Judge on this Prometheus instead of scraping.")
@argument("-q", "--quiet", action="store_true", help="No progress bar.")
def cmd_update(call: Call, args: argparse.Namespace) -> Any:
    """Start a candidate and verify it (ready, deep health, agreement); stable keeps the traffic.

    With --strategy canary a kernel thread then steps its weight and judges it; the
    result is the canary's live view (``.wait()`` for the end)."""
    from workbench.deploy import canary_serve_args, check_canary_files, update_spec

    # parsed and checked as `workbench deploy update` does: a bad file is one sentence
    # (a UsageError) before the candidate starts and before any traffic moves
    spec = update_spec(args.strategy, analysis=args.analysis, steps=args.steps,
                       interval=args.interval, mirror=args.mirror, synthetic=args.synthetic,
                       labelled=args.labelled)
    deployment = _deployment(call, args.name)
    if spec is not None:
        spec = check_canary_files(deployment, spec, args.version)
    steps = [f"start {args.version}", *UPDATE_STEPS.values()]
    latest: dict[str, Any] = {"done": 0, "text": steps[0]}

    def tick(state: Any) -> None:
        rollout = state.rollout
        started = 0 if str(rollout.phase) == "starting" else 1
        latest["done"] = min(len(steps), started + len(rollout.passed))
        if not rollout.in_progress:
            latest["done"] = len(steps)
        latest["text"] = f"{steps[min(latest['done'], len(steps) - 1)]} ({rollout.message})"[:70]

    run_with_progress(
        lambda: deployment.update(
            args.version,
            sample_file=args.sample_file,
            min_agreement=verification_threshold(args.min_agreement, args.strategy),
            auto_promote=args.auto_promote,
            timeout=args.timeout,
            on_tick=tick,
            strategy=args.strategy,
            serve_args=canary_serve_args(spec),  # per-segment counting the analysis judges by
        ),
        desc=f"update {args.name}",
        steps=steps,
        done=lambda: int(latest["done"]),
        status=lambda: str(latest["text"]),
        disable=args.quiet,
    )
    if spec is not None:
        from workbench_ext import canary

        return canary.start(deployment, spec, prometheus=args.prometheus)
    return deployment.status()


def _simple(action: str, doc: str) -> None:
    @verb(action, DEPLOY_VERBS)
    @magic_arguments(name=f"paddle deploy {action}")
    @name
    @reason
    def command(call: Call, args: argparse.Namespace) -> Any:
        deployment = _deployment(call, args.name)
        from workbench.deploy import steer

        if action == "switch":
            deployment.switch(args.reason)
        else:  # during a canary, its controller takes it (promote: skip ahead a step)
            steer(deployment, action, args.reason)
        return deployment.status()

    command.__name__ = f"cmd_{action}"
    command.parser.description = doc


_simple("promote", "All traffic to the candidate; the old colour stays warm for rollback.")
_simple("rollback", "All traffic back to stable (one router reload), then stop the candidate.")
_simple("switch", "Flip all traffic to the other colour; both stay warm.")
_simple("abort", "Drop the candidate before it was promoted; stable keeps all traffic.")


def _canary_verb(action: str, doc: str) -> None:
    @verb(action, DEPLOY_VERBS)
    @magic_arguments(name=f"paddle deploy {action}")
    @name
    @reason
    def command(call: Call, args: argparse.Namespace) -> Any:
        from workbench_ext import canary

        return canary.command(_deployment(call, args.name), action, args.reason)

    command.__name__ = f"cmd_{action}"
    command.parser.description = doc


_canary_verb("pause", "Pause a canary at its current step.")
_canary_verb("resume", "Resume a paused canary, or pass a gate step.")


@verb("weight", DEPLOY_VERBS)
@magic_arguments(name="paddle deploy weight")
@name
@argument("percent", type=int, help="Share of traffic for the candidate, 0..100.")
@reason
def cmd_weight(call: Call, args: argparse.Namespace) -> Any:
    """Send a share of the traffic to the candidate (sticky per user id)."""
    deployment = _deployment(call, args.name)
    deployment.weight(args.percent, args.reason)
    return deployment.status()


@verb("status", DEPLOY_VERBS)
@magic_arguments(name="paddle deploy status")
@argument("name", nargs="?", help="The deployment (default: every deployment, as a table).")
def cmd_status(call: Call, args: argparse.Namespace) -> Any:
    """Phase, colours, versions, weights and health."""
    if args.name:
        return _deployment(call, args.name).status()
    return _list(call)


@verb("history", DEPLOY_VERBS)
@magic_arguments(name="paddle deploy history")
@name
@argument("--limit", type=int, default=None, help="Only the last N entries.")
def cmd_history(call: Call, args: argparse.Namespace) -> Any:
    """Every action on the deployment: when, what, versions, outcome, why."""
    import pandas as pd

    from workbench_ext.display import history_rows

    entries = _deployment(call, args.name).history(args.limit)
    return pd.DataFrame.from_records(
        history_rows(entries),
        columns=["time", "action", "outcome", "stable", "candidate", "phase", "weights", "reason"],
    )


@verb("agreement", DEPLOY_VERBS)
@magic_arguments(name="paddle deploy agreement")
@name
def cmd_agreement(call: Call, args: argparse.Namespace) -> Any:
    """The last output-agreement report of the candidate against stable."""
    import pandas as pd

    report = _deployment(call, args.name).agreement
    if report is None:
        from workbench_ext.errors import SessionError

        raise SessionError(f"{args.name} has no agreement report yet; run `%paddle deploy update` first")
    frame = pd.DataFrame.from_records(report.get("outputs", []))
    frame.attrs["summary"] = report.get("summary", "")
    print(report.get("summary", ""))
    return frame


@verb("list", DEPLOY_VERBS)
@magic_arguments(name="paddle deploy list")
def cmd_list(call: Call, args: argparse.Namespace) -> Any:
    """Every deployment under the workbench home."""
    return _list(call)


def _list(call: Call) -> pd.DataFrame:
    import pandas as pd

    rows = [
        {
            "name": s.name,
            "model": s.model,
            "url": s.url,
            "phase": s.phase,
            "stable": s.stable_version,
            "candidate": s.candidate_version,
            "weights": ", ".join(f"{c} {w}%" for c, w in s.weights.items()),
        }
        for s in call.session.deployments.list()
    ]
    return pd.DataFrame.from_records(
        rows, columns=["name", "model", "url", "phase", "stable", "candidate", "weights"]
    )


@verb("delete", DEPLOY_VERBS)
@magic_arguments(name="paddle deploy delete")
@name
def cmd_delete(call: Call, args: argparse.Namespace) -> Any:
    """Stop the router and both colours, and remove the deployment's state."""
    _deployment(call, args.name).delete()
    return None
