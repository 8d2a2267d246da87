"""``workbench health``: the container health check, from a shell (see :mod:`workbench.health`)."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``health`` command to the workbench CLI."""
    app.command("health")(health)


def health(
    url: Annotated[
        str | None, typer.Option(help="Probe this URL instead of this container's endpoint.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 3.0,
) -> None:
    """Exit 0 when this container is healthy: JupyterLab in lab mode, readiness in serve mode,
    a running nginx in router mode (what the image's HEALTHCHECK runs)."""
    from workbench.health import healthcheck

    ok, message = healthcheck(url, timeout)
    typer.echo(("healthy: " if ok else "unhealthy: ") + message)
    raise typer.Exit(0 if ok else 1)
