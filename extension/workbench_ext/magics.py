"""The ``%paddle`` line magic and ``%%paddle`` cell magic.

``%paddle VERB [ARGS]`` dispatches to one plain function per verb (the shape of
jupysql's ``%sqlcmd``); each verb declares its arguments with IPython's
``@magic_arguments`` so ``%paddle VERB --help`` prints argparse help. User
mistakes become :class:`~IPython.core.error.UsageError` (a sentence, no
traceback). Every verb returns an object, so ``r = %paddle compare ...`` works,
and IPython displays it richly.
"""

from __future__ import annotations

import logging
import shlex
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from workbench import WorkbenchError
from workbench_ext import ops
from workbench_ext._args import argument, magic_arguments
from workbench_ext.deploy_verbs import DEPLOY_VERBS
from workbench_ext.errors import SessionError
from workbench_ext.state import Session, get_session
from workbench_ext.verb import Call, Verb, progress, quiet, verb

if TYPE_CHECKING:
    import argparse

log = logging.getLogger(__name__)
VERBS: dict[str, Verb] = {}


# -- model layer ----------------------------------------------------------------------


@verb("repo", VERBS)
@magic_arguments(name="paddle repo")
@argument("path", nargs="?", help="Repository directory (default: $WORKBENCH_REPO).")
@argument("--demo", action="store_true", help="Train and publish the demo models there if missing.")
@argument("--models", default="digits", help="Demo models to build, comma-separated (digits,resnet).")
@quiet
def cmd_repo(call: Call, args: argparse.Namespace) -> Any:
    """Show the model repository, point the session at another one, or build the demo models."""
    session = call.session
    if args.path:
        session.set_repo(args.path)
    if args.demo:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        ops.build_demo(session.repo.root, models, progress=progress(args))
    return session.repo


@verb("list", VERBS)
@magic_arguments(name="paddle list")
@argument("model", nargs="?", help="A model: list its versions (default: every model).")
@argument(
    "--loaded", action="store_true", help="Only versions loaded in this kernel, with device and memory."
)
def cmd_list(call: Call, args: argparse.Namespace) -> Any:
    """Models of the repository, or versions of a model with aliases, metrics and load state."""
    session = call.session
    if args.loaded:
        return ops.loaded_table(session.hub(args.model, create=False))
    if args.model is None:
        return ops.models_table(session)
    session.repo.versions(args.model)  # ModelNotFoundError early
    session.default_model = args.model
    return ops.versions_table(session, args.model)


@verb("load", VERBS)
@magic_arguments(name="paddle load")
@argument(
    "refs",
    nargs="+",
    metavar="REF",
    help="digits:1.0.0, digits@stable, or a version/alias of the current model.",
)
@argument("--device", default=None, help="cpu, gpu, gpu:N or auto (default: the session's).")
@argument("--memory-pool", type=int, default=None, metavar="MB", help="GPU memory pool in MB.")
@argument("--workers", type=int, default=None, help="Predictor clones, or worker processes.")
@argument(
    "--isolation", choices=("process", "thread"), default=None,
    help="process: the version runs in its own worker processes (unload frees its memory, "
    "a crash does not take the kernel); thread: in the kernel (default on CPU).",
)
@argument("--activate", action="store_true", default=None, help="Make the (last) loaded version active.")
@argument("--no-activate", dest="activate", action="store_false", help="Never change the active version.")
@quiet
def cmd_load(call: Call, args: argparse.Namespace) -> Any:
    """Load, verify and warm versions; the first version loaded for a model becomes active."""
    session = call.session
    groups: dict[str, list[str | None]] = {}
    for text in args.refs:
        model, ref = session.parse(text)
        groups.setdefault(model, []).append(ref)
    loaded = []
    for model, refs in groups.items():
        loaded += ops.load_versions(
            session,
            model,
            refs,
            device=args.device,
            memory_pool_mb=args.memory_pool,
            workers=args.workers,
            activate=args.activate,
            isolation=args.isolation,
            progress=progress(args),
        )
    return loaded[0] if len(loaded) == 1 else loaded


@verb("unload", VERBS)
@magic_arguments(name="paddle unload")
@argument("refs", nargs="*", metavar="REF", help="Versions to unload.")
@argument("--all", action="store_true", help="Unload every version of the model, the active one last.")
@argument("--model", default=None, help="The model (with --all).")
def cmd_unload(call: Call, args: argparse.Namespace) -> Any:
    """Drain and free loaded versions (the active one only with --all)."""
    session = call.session
    if args.all:
        hub = session.hub(args.model, create=False)
        versions = [str(lv.version) for lv in hub.loaded]
        hub.close()
        session.hubs.pop(hub.model, None)
        return versions
    if not args.refs:
        raise SessionError("unload what? name versions, or --all")
    done = []
    for text in args.refs:
        model, version = session.resolve(text)
        session.hub(model, create=False).unload(version)
        done.append(f"{model}:{version}")
    return done


@verb("use", VERBS)
@magic_arguments(name="paddle use")
@argument("ref", help="A loaded version: digits:1.1.0, digits@canary, or 1.1.0 of the current model.")
def cmd_use(call: Call, args: argparse.Namespace) -> Any:
    """Switch the active version atomically (in-flight requests finish on the old one).

    It acts on the model named in REF, else on the current model, and says which;
    it never changes which model is current.
    """
    session = call.session
    current = session.default_model
    model, ref = session.parse(args.ref)
    try:
        version = session.repo.resolve(model, ref)
    except WorkbenchError as exc:
        if model == current and not any(sep in args.ref for sep in "@:"):
            raise SessionError(
                f"{exc} ({model} is the current model); name the model, e.g. `%paddle use MODEL:{ref}`"
            ) from None
        raise
    hub = session.hubs.get(model)
    if hub is None or version not in hub:
        raise SessionError(f"{model}:{version} is not loaded; run `%paddle load {model}:{version}` first")
    before = hub.active.version if hub.active is not None else None
    active = hub.use(version)
    note = f"; the current model stays {current}" if current not in (None, model) else ""
    print(f"{model}: {version} is active (was {before}){note}")
    return active


@verb("rollback", VERBS)
@magic_arguments(name="paddle rollback")
@argument("model", nargs="?", help="The model (default: the current one).")
def cmd_rollback(call: Call, args: argparse.Namespace) -> Any:
    """Back to the previously active version."""
    return call.session.hub(args.model, create=False).rollback()


@verb("predict", VERBS)
@magic_arguments(name="paddle predict")
@argument("ref", nargs="?", help="Model or version (default: the active version of the current model).")
@argument(
    "--input",
    "-i",
    dest="data",
    default=None,
    metavar="EXPR",
    help="The input: a variable or expression (or the cell's last expression in %%%%paddle).",
)
def cmd_predict(call: Call, args: argparse.Namespace) -> Any:
    """Run an input through the active (or a named) version; returns a Prediction."""
    session = call.session
    model, ref = session.parse(args.ref)
    hub = session.loaded_hub(model)
    value = call.value(args.data, "input", required=True)
    target = hub.get(ref) if ref else hub.active
    assert target is not None
    inputs = ops.coerce_inputs(target.inputs, value)
    return hub.predict(inputs, version=target.version if ref else None)


def _versions(call: Call, refs: list[str], model: str | None) -> tuple[str, list[str]]:
    names: set[str] = set()
    versions: list[str] = []
    for text in refs:
        name, ref = call.session.parse(text, model=model)
        names.add(name)
        if ref is None:
            continue
        versions.append(ref)
    if len(names) > 1:
        raise SessionError(f"compare versions of one model, not {', '.join(sorted(names))}")
    return (names.pop() if names else call.session.model(model)), versions


@verb("compare", VERBS)
@magic_arguments(name="paddle compare")
@argument(
    "refs",
    nargs="*",
    metavar="REF",
    help="Versions to compare (default: every loaded one); missing ones are loaded.",
)
@argument("--model", default=None, help="The model (when versions are bare).")
@argument(
    "--data",
    default=None,
    metavar="EXPR",
    help="Input rows: a variable or expression (default: the manifest sample).",
)
@argument("--labels", default=None, metavar="EXPR", help="True classes, for accuracy.")
@argument("--batch-size", type=int, default=32, help="Rows per batch (default 32).")
@quiet
def cmd_compare(call: Call, args: argparse.Namespace) -> Any:
    """Run the same inputs through several versions: agreement, accuracy and latency."""
    model, versions = _versions(call, args.refs, args.model)
    data = call.value(args.data, "data")
    labels = call.eval(args.labels) if args.labels else None
    return ops.run_compare(
        call.session,
        model,
        versions,
        data,
        labels=labels,
        batch_size=args.batch_size,
        progress=progress(args),
    )


@verb("bench", VERBS)
@magic_arguments(name="paddle bench")
@argument("refs", nargs="*", metavar="REF", help="Loaded versions (default: every loaded one).")
@argument("--model", default=None, help="The model (when versions are bare).")
@argument("--data", default=None, metavar="EXPR", help="Input rows (default: the manifest sample).")
@argument("--batch-size", type=int, default=8, help="Rows per request (default 8).")
@argument("--requests", type=int, default=100, help="Requests per version (default 100).")
@argument("--concurrency", type=int, default=2, help="Concurrent requests (default 2).")
@quiet
def cmd_bench(call: Call, args: argparse.Namespace) -> Any:
    """Latency percentiles and throughput of loaded versions under concurrent requests."""
    model, versions = _versions(call, args.refs, args.model)
    data = call.value(args.data, "data")
    return ops.bench(
        call.session,
        model,
        versions,
        data=data,
        batch_size=args.batch_size,
        requests=args.requests,
        concurrency=args.concurrency,
        progress=progress(args),
    )


@verb("serve", VERBS)
@magic_arguments(name="paddle serve")
@argument("ref", nargs="?", help="What to serve: digits@stable, digits:1.1.0 (default: the active version).")
@argument("--port", type=int, default=None, help="Port on 127.0.0.1 (default: a free one).")
@argument("--device", default="cpu", help="cpu, gpu, gpu:N or auto (default cpu).")
@argument("--workers", type=int, default=1, help="Predictor clones (default 1).")
@argument("--stop", default=None, metavar="PORT|all", help="Stop a model served from this kernel.")
@argument("--list", action="store_true", help="Models served from this kernel.")
def cmd_serve(call: Call, args: argparse.Namespace) -> Any:
    """Start `workbench serve` beside the kernel (Open Inference Protocol on loopback)."""
    from workbench_ext import serve

    session = call.session
    if args.stop:
        return serve.stop(session, args.stop)
    if args.list:
        return list(session.servers.values())
    model, ref = session.parse(args.ref)
    if ref is None:
        hub = session.hubs.get(model)
        version = str(hub.active.version) if hub and hub.active else str(session.repo.resolve(model, None))
    else:
        version = str(session.repo.resolve(model, ref))
    return serve.start(session, model, version, port=args.port, device=args.device, workers=args.workers)


@verb("panel", VERBS)
@magic_arguments(name="paddle panel")
@argument("kind", choices=["versions", "compare", "deploy"], help="Which panel.")
@argument("target", nargs="?", help="The model (versions, compare) or the deployment (deploy).")
def cmd_panel(call: Call, args: argparse.Namespace) -> Any:
    """Interactive panels: versions (load/use/rollback), compare (side by side), deploy (blue/green)."""
    session = call.session
    if args.kind == "versions":
        from workbench_ext.panels.versions import VersionsPanel

        return VersionsPanel(session, session.model(args.target))
    if args.kind == "compare":
        from workbench_ext.panels.compare import ComparePanel

        return ComparePanel(session, session.model(args.target), namespace=call.shell.user_ns)
    from workbench_ext.panels.deploy import DeployPanel

    if not args.target:
        names = session.deployments.names()
        if len(names) != 1:
            raise SessionError(
                "which deployment? " + (f"there are {', '.join(names)}" if names else "there are none yet")
            )
        args.target = names[0]
    return DeployPanel(session, args.target)


@verb("deploy", VERBS)
@magic_arguments(name="paddle deploy")
@argument(
    "action", help="create, update, promote, rollback, switch, weight, abort, status, history, list, delete."
)
@argument("rest", nargs="*", help="The action's arguments (see %%paddle deploy ACTION --help).")
def cmd_deploy(call: Call, args: argparse.Namespace) -> Any:
    """Blue/green deployments behind a router: the same verbs as `workbench deploy`."""
    raise AssertionError("dispatched by PaddleMagics")  # pragma: no cover


# -- dispatch -------------------------------------------------------------------------


def plain_help(text: str) -> str:
    """IPython writes magic help as reST (``::`` before the usage and literal blocks);
    a notebook shows it as plain text, so the markers go."""
    usage = "::\n\n  "
    if text.startswith(usage):
        text = "Usage: " + text.removeprefix(usage)
    return text.replace("::\n", ":\n")


def _help(func: Any) -> str:
    return plain_help(str(func.parser.format_help()))


def _dispatch(table: dict[str, Any], argv: list[str], call: Call, what: str) -> Any:
    if not argv or argv[0] in ("-h", "--help", "help"):
        lines = [f"{what} VERB [ARGS]  (add --help after a verb for its arguments)", ""]
        for name, func in table.items():
            description = func.parser.description or ""
            lines.append(f"  {name:<10} {description.strip().splitlines()[0] if description else ''}")
        print("\n".join(lines))
        return None
    name, rest = argv[0], argv[1:]
    func = table.get(name)
    if func is None:
        raise UsageError(f"{what}: unknown verb {name!r}; choose from {', '.join(table)}")
    if func is cmd_deploy and rest and rest[0] not in ("-h", "--help"):
        return _dispatch(DEPLOY_VERBS, rest, call, f"{what} deploy")
    if "-h" in rest or "--help" in rest:
        print(_help(func))
        return None
    args = func.parser.parse_args(rest)
    return func(call, args)


@magics_class
class PaddleMagics(Magics):
    """The %paddle magics over one per-kernel Session."""

    def __init__(self, shell: Any, session: Session | None = None) -> None:
        super().__init__(shell)
        self.session = session if session is not None else get_session(shell)

    @magic_arguments()
    @argument(
        "verb",
        help="repo, list, load, unload, use, rollback, predict, compare, bench, serve, deploy, panel.",
    )
    @argument("args", nargs="*", help="The verb's arguments; `%%paddle VERB --help` lists them.")
    @line_cell_magic
    def paddle(self, line: str, cell: str | None = None) -> Any:
        """Paddle model versions side by side, hot swap, blue/green serving.

        Examples::

            %paddle repo --demo                      # the demo models in $WORKBENCH_REPO
            %paddle list digits                      # versions, aliases, metrics
            %paddle load digits@stable digits:1.1.0  # load and warm two versions
            %paddle predict --input x_test[:5]       # the active version
            %paddle use 1.1.0                        # atomic switch
            %paddle rollback                         # back to the previous one
            r = %paddle compare 1.0.0 1.1.0 --data x_test --labels y_test
            %paddle bench --batch-size 16
            %paddle panel versions                   # load/unload/use/rollback buttons
            %paddle deploy create web digits@stable  # blue/green behind nginx
            %paddle deploy update web 1.1.0
            %paddle deploy weight web 25
            %paddle deploy promote web

        With %%paddle the cell's last expression is the input of predict, compare or bench.
        """
        try:
            argv = shlex.split(line, comments=True)  # `%paddle use 1.1.0  # why` as in Python
        except ValueError as exc:
            raise UsageError(f"cannot parse the arguments: {exc}") from None
        call = Call(self.shell, self.session, cell)
        try:
            return _dispatch(VERBS, argv, call, "%paddle")
        except UsageError:
            raise
        except (WorkbenchError, SessionError) as exc:
            raise UsageError(str(exc)) from None


PaddleMagics.paddle.__doc__ = plain_help(PaddleMagics.paddle.__doc__ or "")

