"""``workbench deploy``: blue/green deployments from a shell.

A thin face over :mod:`workbench.deploy.manager`; the notebook extension calls
the same API and reads the same state, so what one does the other sees.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from workbench.cli import _instance_options as instance
from workbench.cli._common import JsonOption, RepoOption, console, err_console, print_json
from workbench.cli._instance_options import MaxSegmentsOption, SegmentByOption
from workbench.deploy.rollout.phases import DEFAULT_MIN_AGREEMENT, verification_threshold
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.state import DeploymentState
    from workbench.deploy.status import DeploymentStatus
    from workbench.deploy.traffic import Rates

app = typer.Typer(
    help="Blue/green deployments: one router in front of two colours of serving instances.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NameArg = Annotated[str, typer.Argument(help="Deployment name (lowercase letters, digits, '-').")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded in the history.")]


def register(parent: typer.Typer) -> None:
    """Add the ``deploy`` group to the workbench CLI."""
    parent.add_typer(app, name="deploy")


def _manager(repo: Path | None = None) -> DeploymentManager:
    from workbench.deploy.history import set_face
    from workbench.deploy.manager import DeploymentManager

    set_face("cli")  # the history says who acted

    return DeploymentManager(repo=repo)


def _done(state: DeploymentState, what: str, json: bool) -> None:
    if json:
        print_json(state.to_dict())
        return
    from workbench.cli._deploy_view import done_line

    console.print(done_line(state, what))


# -- commands -----------------------------------------------------------------------------


@app.command()
def create(
    name: NameArg,
    model: Annotated[str, typer.Option("--model", "-m", help="Model to serve.")],
    version: Annotated[
        str, typer.Option("--version", "-v", help="Version or alias for blue.")
    ] = "stable",
    backend: Annotated[
        str, typer.Option(help="Where instances run: process (local, default), docker or kubernetes.")
    ] = "process",
    docker_host: Annotated[
        str | None,
        typer.Option(help="Docker engine for --backend docker, e.g. ssh://user@gpu-box."),
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Workbench image for --backend docker or kubernetes.")
    ] = None,
    # --backend kubernetes (state, colours and traffic in the cluster)
    namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace [default: context's].")] = None,
    context: Annotated[str | None, typer.Option(help="Kube context [default: the current one].")] = None,
    kubeconfig: Annotated[str | None, typer.Option(help="Kubeconfig file [default: $KUBECONFIG].")] = None,
    pvc: Annotated[str | None, typer.Option(help="PersistentVolumeClaim of the model repository.")] = None,
    models_path: Annotated[
        str | None,
        typer.Option(help="Directory on the nodes holding the model repository, mounted read-only "
                     "(instead of --pvc).")
    ] = None,
    host_network: Annotated[
        bool,
        typer.Option("--host-network", help="Pods in the node's network (clusters without a pod "
                     "network): blue binds port 8000 on the node, green 8001."),
    ] = False,
    image_pull_policy: Annotated[
        str | None,
        typer.Option(help="Always, IfNotPresent or Never (an image loaded on the nodes) "
                     "[default: IfNotPresent].", show_default=False)
    ] = None,
    gpus: Annotated[int | None, typer.Option(help="nvidia.com/gpu per replica.")] = None,
    replicas: Annotated[
        int | None,
        typer.Option(help="Instances of each colour: per --engine, or the Kubernetes Deployment's "
                     "replicas [default: 1].")
    ] = None,
    preview_replicas: Annotated[int | None, typer.Option(help="Candidate replicas before traffic.")] = None,
    gateway: Annotated[str | None, typer.Option(help="Gateway for the HTTPRoute (canary weights).")] = None,
    scale_down_delay: Annotated[
        float | None, typer.Option(help="Seconds the old colour stays up after a switch.")
    ] = None,
    node_address: Annotated[
        str | None, typer.Option(help="Reach colours at this node's NodePorts (workbench outside).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Public port of the router [default: a free port].")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the router listens on.")] = "127.0.0.1",
    device: Annotated[str, typer.Option(help="cpu or gpu:N for the instances.")] = "cpu",
    workers: Annotated[int, typer.Option(help="Predictor workers per instance.")] = 1,
    isolation: Annotated[
        str | None,
        typer.Option(help="process (worker processes, serve's default) or thread (in the "
                     "instance's process: a pipeline starts in seconds); candidates inherit it.",
                     show_default=False),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for blue to get ready.")] = 180.0,
    engine: Annotated[
        list[str] | None,
        typer.Option(help="A Docker engine each colour runs on, URL[=ADDRESS] (repeat for a "
                     "fleet), e.g. ssh://deploy@gpu1; implies --backend docker."),
    ] = None,
    publish_address: Annotated[
        str | None,
        typer.Option(help="Address the router reaches --engine instances at [default: the "
                     "engine's host name resolved].")
    ] = None,
    min_ready: Annotated[
        int, typer.Option(help="Ready instances a colour needs [default: all of them].",
                          show_default=False)
    ] = 0,
    segment_by: SegmentByOption = None,
    max_segments: MaxSegmentsOption = None,
    repo: RepoOption = None,
    json: JsonOption = False,
) -> None:
    """Start MODEL VERSION as blue and put the router in front of it.

    With --engine (repeatable) each colour runs --replicas instances on every engine,
    and the router balances over all of them. --segment-by makes the instances count
    requests per segment from the start (later candidates too), as a canary whose rules
    compare each segment with stable's needs."""
    from workbench.deploy.fleet import parse_engine

    if not engine and backend != "kubernetes" and (replicas is not None or publish_address):
        from workbench.errors import DeployValueError

        raise DeployValueError("--replicas and --publish-address go with --engine")
    counting = instance.segment_args(segment_by, max_segments)
    engines = [parse_engine(e, replicas or 1, publish_address) for e in engine or ()]
    if engines:
        backend = "docker"
    options: dict[str, Any] = {"image": image}
    manager = _manager(repo)
    if backend == "kubernetes":
        options |= {"namespace": namespace, "context": context, "kubeconfig": kubeconfig, "pvc": pvc,
                    "gpus": gpus, "replicas": replicas, "preview_replicas": preview_replicas,
                    "gateway": gateway, "scale_down_delay": scale_down_delay,
                    "node_address": node_address, "models_path": models_path,
                    "host_network": host_network or None, "image_pull_policy": image_pull_policy}
        manager = _kubernetes_manager(manager, namespace, context, kubeconfig)
    backend_options = {k: str(v) for k, v in options.items() if v is not None}
    with console.status(f"starting {model} {version} as blue of {name}…", spinner="dots") as spinner:
        if backend == "kubernetes":
            _kubernetes_progress(manager.backend(backend, backend_options), spinner, f"{name}:")
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
            backend_options=backend_options or None,
            engines=engines,
            min_ready=min_ready,
            serve_args=counting,
            isolation=isolation,
        )
    state = deployment.state
    if json:
        print_json(state.to_dict())
        return
    console.print(f"{name}: {model} {state.stable_version} live on blue at [bold]{state.url}[/]")
    if backend == "kubernetes":
        console.print(_kubernetes_hint(manager, name))


def _kubernetes_manager(manager: DeploymentManager, namespace: str | None, context: str | None,
                        kubeconfig: str | None) -> DeploymentManager:
    """The manager with its state in the cluster (unless WORKBENCH_STATE already says so)."""
    from workbench.deploy.manager import DeploymentManager
    from workbench.deploy.platforms.kubernetes.client import KubeApi, translate
    from workbench.deploy.platforms.kubernetes.store import ClusterStateStore
    from workbench.errors import StateError

    if isinstance(manager.store, ClusterStateStore):
        return manager
    with translate(StateError):
        api = KubeApi.connect(context=context, config_file=kubeconfig, namespace=namespace)
    return DeploymentManager(manager.home, repo=manager.repo, store=ClusterStateStore(api, manager.home))


def _kubernetes_progress(engine: Any, spinner: Any, prefix: str) -> None:
    """Show a Kubernetes backend's waits (``2 of 3 updated replicas are available``) on the spinner."""
    if getattr(engine, "name", None) == "kubernetes":
        engine.progress = lambda line: spinner.update(f"{prefix} {line}")


def _kubernetes_hint(manager: DeploymentManager, name: str) -> str:
    from workbench.deploy.platforms.kubernetes.store import ClusterStateStore

    store = manager.store
    assert isinstance(store, ClusterStateStore)
    context = f" WORKBENCH_K8S_CONTEXT={store.api.context}" if store.api.context else ""
    return (f"state in ConfigMap {store.api.namespace}/{store.configmap(name)}; "
            f"other shells and machines reach it with: export WORKBENCH_STATE=kubernetes "
            f"WORKBENCH_K8S_NAMESPACE={store.api.namespace}{context}")


@app.command()
def update(
    name: NameArg,
    version: Annotated[str, typer.Option("--version", "-v", help="Version or alias to roll out.")],
    sample: Annotated[
        Path | None,
        typer.Option(help="Extra agreement inputs: .npz (one array per input) or .npy; an OCR "
                     "pipeline: a directory of images."),
    ] = None,
    auto_promote: Annotated[
        bool, typer.Option("--auto-promote", help="Promote as soon as verification passes.")
    ] = False,
    min_agreement: Annotated[
        float | None,
        typer.Option(help=f"Top-1 agreement (0..1) the candidate needs with stable on the "
                     f"samples before any traffic; 0: no check [default: {DEFAULT_MIN_AGREEMENT}; "
                     "0 with --strategy canary, whose analysis judges agreement on live inputs]."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for verification.")] = 180.0,
    strategy: Annotated[
        str, typer.Option(help="blue-green (wait for promote) or canary (step by step, judged).")
    ] = "blue-green",
    steps: Annotated[
        str | None, typer.Option(help="Canary weights in percent, 'gate' waits: 5,25,gate,100.")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Canary analysis interval, e.g. 30s or 1m.")
    ] = None,
    mirror: Annotated[
        int | None, typer.Option(help="Mirror this % of stable's requests to the candidate first.")
    ] = None,
    analysis: Annotated[
        Path | None, typer.Option(help="Canary analysis file (.toml or .yaml) with the rules.")
    ] = None,
    synthetic: Annotated[
        float | None, typer.Option(help="Send the sample at this many requests/s to the canary.")
    ] = None,
    labelled: Annotated[
        Path | None, typer.Option(help="Canary accuracy rule's labelled set: .npz of inputs and "
                                  "`labels`; an OCR pipeline: a directory of images and texts.json.")
    ] = None,
    prometheus: Annotated[
        str | None, typer.Option(help="Judge on this Prometheus (PromQL) instead of scraping.")
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Return once the candidate started; a background "
                           "controller verifies it and runs the canary.")
    ] = False,
    fault_error_rate: Annotated[
        float, typer.Option(help="Chaos testing: share of the candidate's inference requests "
                            "answered 500 (0..1); stable gets no faults.")
    ] = 0.0,
    fault_latency_ms: Annotated[
        float, typer.Option(help="Chaos testing: milliseconds added to each of the candidate's "
                            "inference requests (0..600000).")
    ] = 0.0,
    fault_segment: Annotated[
        str | None, typer.Option(help="Chaos testing: inject the faults only into one traffic "
                                 "segment's requests (x-tenant=b, or param:tenant=b).")
    ] = None,
    segment_by: SegmentByOption = None,
    max_segments: MaxSegmentsOption = None,
    json: JsonOption = False,
) -> None:
    """Start VERSION on the other colour, verify it, report, then wait for `promote`.

    Verification: readiness, deep health, and output agreement with stable on the
    manifests' samples (plus --sample). Stable keeps all traffic meanwhile. With
    --strategy canary the candidate then takes the --steps weights one --interval at a
    time, judged by the analysis rules: promoted at the end, rolled back when one fails.
    --fault-error-rate and --fault-latency-ms make the candidate fail and slow down on
    purpose (chaos testing), to rehearse a rollback on the deployment itself; its
    verification then skips the agreement check. --fault-segment limits them to the
    requests of one segment, for an analysis that judges rules per segment (segment_by).
    The candidate counts requests per segment as the analysis needs, as stable does,
    and per --segment-by.
    """
    from workbench.cli._deploy_view import agreement_view, phase
    from workbench.deploy.canary import check_files, update_spec
    from workbench.errors import RolloutError

    faults = instance.faults(fault_error_rate, fault_latency_ms, fault_segment)
    counting = instance.segment_args(segment_by, max_segments)
    spec = update_spec(strategy, analysis=analysis, steps=steps, interval=interval, mirror=mirror,
                       synthetic=synthetic, labelled=labelled)
    deployment = _manager().get(name)
    if spec is not None:  # stable's segments and every file the analysis names, checked first
        spec = check_files(deployment, spec, version)
    last = {"message": ""}

    def progress(state: DeploymentState) -> None:
        message = state.rollout.message
        if message and message != last["message"] and not json:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {phase(state.phase)}: {message}")
            last["message"] = message

    if spec is not None and detach:
        # the controller verifies and steps; this returns as soon as the candidate started
        from workbench.cli import canary as canary_cli

        with console.status(f"starting {version} on {name}…", spinner="dots") as spinner:
            _kubernetes_progress(deployment.context.backend(deployment.state), spinner,
                                 f"{name}:")
            deployment.update(version, sample_file=sample, auto_promote=False,
                              min_agreement=verification_threshold(min_agreement, strategy),
                              timeout=timeout, wait=False, strategy=strategy, faults=faults,
                              serve_args=instance.serve_args(spec, counting),
                              checks=instance.checks(faults))
        canary_cli.start(deployment, spec, detach=True, prometheus=prometheus, json=json)
        return
    error: RolloutError | None = None
    with console.status(f"rolling out {version} to {name}…", spinner="dots") as spinner:
        _kubernetes_progress(deployment.context.backend(deployment.state), spinner, f"{name}:")
        try:
            state = deployment.update(
                version,
                sample_file=sample,
                auto_promote=auto_promote,
                min_agreement=verification_threshold(min_agreement, strategy),
                timeout=timeout,
                on_tick=progress,
                strategy=strategy,
                faults=faults,
                serve_args=instance.serve_args(spec, counting),
                checks=instance.checks(faults),
            )
        except RolloutError as exc:
            error = exc
            state = deployment.state
    if json:
        print_json(state.to_dict())
    else:
        if state.agreement:
            console.print(agreement_view(dict(state.agreement)))
        if error is None and spec is None:
            hint = "" if auto_promote else f" — promote with: workbench deploy promote {name}"
            _done(state, f"{state.candidate_version} verified{hint}", False)
    if error is not None:
        raise error
    if spec is not None:
        from workbench.cli import canary as canary_cli

        canary_cli.start(deployment, spec, detach=detach, prometheus=prometheus, json=json)


@app.command()
def promote(name: NameArg, reason: ReasonOption = "", json: JsonOption = False) -> None:
    """All traffic to the candidate; stable stays warm as the rollback target.

    During a canary: skip ahead to the next step (past a gate, too)."""
    from workbench.cli.brake import pull, pulled

    pulled("promote", *pull("promote", name, reason), json)


@app.command()
def rollback(name: NameArg, reason: ReasonOption = "", json: JsonOption = False) -> None:
    """All traffic back to stable (one router reload), then stop the candidate."""
    from workbench.cli.brake import pull, pulled

    pulled("rollback", *pull("rollback", name, reason), json)


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
    from workbench.cli.brake import pull, pulled

    pulled("abort", *pull("abort", name, reason), json)


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="Deployment [default: all].")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 1.0,
    count: Annotated[
        int | None, typer.Option(min=1, help="With --watch: stop after this many refreshes.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Phase, traffic split and live health of one deployment (or all).

    With --watch, also each colour's requests/s, server errors and p99 latency
    (from its /metrics between two refreshes), under a timestamp. Without --watch,
    exits 1 when a deployment shown is unhealthy (its router down, or a colour that
    takes traffic short of ready instances) or unreadable, or when its unfinished
    canary is paused or has no live controller (the reason on one line), so scripts
    and monitors can act on it.
    """
    from workbench.errors import StateCorruptError

    manager = _manager()
    unreadable: set[str] = set()

    def snapshot() -> list[DeploymentStatus]:
        if name:
            return [manager.get(name).status()]
        statuses = []
        for each in manager.names():
            try:
                statuses.append(manager.get(each).status())
            except StateCorruptError as exc:  # one unreadable deployment hides none of the others
                if each not in unreadable:
                    unreadable.add(each)
                    err_console.print(f"✗ {exc}")
        return statuses

    if not watch:
        statuses = snapshot()
        if json:
            print_json(statuses[0].to_dict() if name else [s.to_dict() for s in statuses])
        else:
            console.print(_render(statuses, None))
        problems = [s.canary_problem for s in statuses if s.canary_problem]
        for problem in problems:
            err_console.print(f"✗ {problem}", highlight=False)
        if unreadable or problems or not all(s.healthy for s in statuses):
            raise typer.Exit(1)
        return
    from rich.live import Live

    from workbench.deploy.traffic import TrafficSampler

    sampler = TrafficSampler()

    def live_rates(statuses: list[DeploymentStatus]) -> list[dict[str, Rates]]:
        return [
            sampler.scrape(_running_urls(s)) for s in statuses
        ]

    shown = 0
    try:
        if json:
            while count is None or shown < count:
                statuses = snapshot()
                print_json([
                    {**s.to_dict(), "traffic": r} for s, r in zip(statuses, live_rates(statuses), strict=True)
                ])
                shown += 1
                time.sleep(interval)
            return
        if not console.is_terminal:  # piped or logged: one frame after the other
            while count is None or shown < count:
                if shown:
                    time.sleep(interval)
                    console.print()
                statuses = snapshot()
                console.print(_render(statuses, live_rates(statuses)))
                shown += 1
            return
        statuses = snapshot()
        with Live(_render(statuses, live_rates(statuses)), console=console,
                  auto_refresh=False) as live:
            shown = 1
            while count is None or shown < count:
                time.sleep(interval)
                statuses = snapshot()
                live.update(_render(statuses, live_rates(statuses)), refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass


def _running_urls(status: DeploymentStatus) -> dict[str, list[str]]:
    """Colour -> the URLs of its running instances (all of them, on every engine)."""
    urls: dict[str, list[str]] = {}
    for i in status.instances:
        if i.running:
            urls.setdefault(i.color, []).append(i.url)
    return urls


def _render(statuses: list[DeploymentStatus], rates: list[dict[str, Rates]] | None) -> RenderableType:
    from rich.console import Group

    from workbench.cli._deploy_view import status_view
    from workbench.cli.canary import status_part

    if not statuses:
        return "no deployments (create one with: workbench deploy create NAME --model M)"
    manager = _manager()
    views: list[RenderableType] = []
    for k, s in enumerate(statuses):
        if k:
            views.append("")
        views.append(status_view(s, None if rates is None else rates[k], console.width))
        views.extend(status_part(manager.get(s.state.name), s.controller))
    return Group(*views)


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
        from workbench.cli.canary import carry_on

        carry_on(manager.get(each), quiet=json)
    if json:
        print_json([s.to_dict() for s in states])


@app.command()
def history(
    name: NameArg,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the last N entries.")] = None,
    json: JsonOption = False,
) -> None:
    """What was done to a deployment: time, action, versions, outcome, reason."""
    entries = _manager().get(name).history(limit)
    if json:
        print_json([e.to_dict() for e in entries])
        return
    from workbench.cli._deploy_view import history_view

    console.print(history_view(name, entries, console.width))


@app.command()
def logs(
    name: NameArg,
    color: Annotated[
        str | None, typer.Argument(help="blue or green (default: both colours and the router).")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Only the lines of this model version.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl+C stops).")
    ] = False,
    tail: Annotated[int, typer.Option(min=0, help="Number of lines per source.")] = 200,
) -> None:
    """The last lines of a deployment's serving instances and router, by model version.

    Instances log JSON lines tagged with model_version; the router's access log names the
    colour and version that answered each request. Lines are prefixed with their source.
    """
    from workbench.deploy import logs as deploy_logs

    if color is not None and color not in ("blue", "green"):
        raise typer.BadParameter("colour must be blue or green")
    sources = _manager().get(name).log_sources(color)  # type: ignore[arg-type]
    for line in deploy_logs.read(sources, version, tail):
        typer.echo(line)
    if follow:
        try:
            for line in deploy_logs.follow(sources, version):
                typer.echo(line)
        except KeyboardInterrupt:
            pass


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


def _register_canary() -> None:
    from workbench.cli import canary, export

    canary.register(app, lambda: _manager())
    export.register(app)


_register_canary()
