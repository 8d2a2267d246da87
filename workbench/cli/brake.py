"""The emergency brake: ``workbench rollback NAME`` before typer loads; the one way the
CLI steers a deployment (promote, rollback, abort) and says what happened.

A manual rollback is typed when a release goes wrong, often on a busy host, and the
time that counts is from the keystroke to the last request on the bad version. So
:func:`brake` reads the few forms of the two verbs by hand (``[deploy] rollback|abort
NAME [--reason TEXT] [--json]``) and acts: the router switch comes first, the
candidate is stopped after it. For a rollback the deploy layer prepared
(:mod:`workbench.deploy.prepared`), the standard library alone pulls the router's brake
(:func:`workbench.cli._switch.switch`: a file that sends every request to stable, no
reload), under the deployment's lock; the deploy layer is imported after that, and its
rollback, run inside the same lock, installs the rolled-back configuration and does the
rest. Otherwise the deploy layer does it all. Only then are typer and rich imported, to
print what the typer command prints (:func:`pulled`, which ``promote`` uses too).
Anything else (``--help``, another option, a missing name) is left to typer, whose
command calls the same :func:`pull`.
"""

from __future__ import annotations

import contextlib

from workbench.cli._switch import switch

TYPE_CHECKING = False  # typing is not imported before the switch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from workbench.deploy.deployment import Deployment
    from workbench.deploy.rollout.controller import CanaryStatus
    from workbench.deploy.state import DeploymentState

__all__ = ["brake", "log_warnings", "parse", "pull", "pulled"]

VERBS = ("rollback", "abort")


def parse(args: Sequence[str]) -> tuple[str, str, str, bool] | None:
    """``(verb, name, reason, json)`` of a rollback or abort command line, or None for any
    other command line (typer's to read)."""
    words = list(args)
    if words[:1] == ["deploy"]:
        words = words[1:]
    if not words or words[0] not in VERBS:
        return None
    verb, rest = words[0], words[1:]
    name: str | None = None
    reason, json = "", False
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "--json":
            json = True
        elif word == "--reason" and i + 1 < len(rest):
            reason = rest[i + 1]
            i += 1
        elif word.startswith("--reason="):
            reason = word.partition("=")[2]
        elif name is None and word and not word.startswith("-"):
            name = word
        else:
            return None
        i += 1
    return None if name is None else (verb, name, reason, json)


def log_warnings() -> None:
    """Warnings and errors of the layers below to stderr, one line each (after the
    switch: ``logging`` is one of the imports it does not wait for)."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def pull(
    verb: str, name: str, reason: str, *, locked: bool = False
) -> tuple[Deployment, CanaryStatus | None, DeploymentState]:
    """Promote, roll back or abort ``name`` (:func:`~workbench.deploy.canary.steer`:
    through its canary's controller when a canary is under way, the status it ends in;
    else on the deployment itself), and the state it ends in. ``locked``: this thread
    holds the deployment's lock already (the brake's switch)."""
    from workbench.deploy.canary import steer
    from workbench.deploy.history import set_face
    from workbench.deploy.manager import DeploymentManager

    set_face("cli")  # the history says who acted
    manager = DeploymentManager()
    with manager.store.held(name) if locked else contextlib.nullcontext():
        deployment = manager.get(name)
        steered = steer(deployment, verb, reason)
    return deployment, steered.canary, steered.state


def brake(args: Sequence[str]) -> bool:
    """Carry out a rollback or abort command line and print its outcome (True), or leave
    any other command line alone (False)."""
    parsed = parse(args)
    if parsed is None:
        return False
    verb, name, reason, json = parsed
    # an abort of a promoted candidate is refused: only a rollback pulls the brake
    held = switch(name) if verb == "rollback" else None
    log_warnings()
    try:
        outcome = pull(verb, name, reason, locked=held is not None)
    finally:
        if held is not None:
            held.release()
    pulled(verb, *outcome, json)
    return True


def _what(verb: str, state: DeploymentState) -> str:
    """What ``verb`` did, when the deployment acted on its own (no canary under way)."""
    if verb == "promote":
        return f"promoted {state.candidate_version}"
    if verb == "rollback":
        return f"rolled back to {state.stable_version}"
    return "candidate dropped"


def pulled(verb: str, deployment: Deployment, status: CanaryStatus | None,
           state: DeploymentState, json: bool) -> None:
    """Print how :func:`pull` ended: the state as JSON, the canary's line when its
    controller acted, else what the deployment did (typer and rich are imported here,
    after the switch)."""
    from workbench.cli._common import console, print_json

    if json:
        print_json(state.to_dict())
    elif status is not None:  # the canary's controller acted
        from workbench.cli.canary import said

        console.print(said(deployment.name, status), highlight=False)
    else:
        from workbench.cli._deploy_view import done_line

        console.print(done_line(state, _what(verb, state)))
