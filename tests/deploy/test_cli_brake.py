"""The emergency brake: ``workbench rollback NAME`` switches the router before typer, rich
or anything else the switch does not need is imported; other command lines go to typer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.deploy.test_cli_deploy import env, run  # noqa: F401 - the stub CLI's env fixture
from tests.deploy.test_deployment import colors
from workbench.cli.brake import parse

#: what the switch must not wait for (psutil it needs: it checks the nginx masters)
NOT_BEFORE_THE_SWITCH = {"typer", "rich", "click", "pydantic", "numpy", "httpx", "prometheus_client"}

_PROBE = """
import json, sys
import workbench.deploy.nginx as nginx
real = nginx.NginxRouter.apply
loaded = []
def apply(self, table):
    loaded.append(sorted({m.split('.')[0] for m in sys.modules}))
    return real(self, table)
nginx.NginxRouter.apply = apply
from workbench.cli import main
try:
    main(sys.argv[1:])
finally:
    print(json.dumps(loaded), file=sys.stderr)
"""


@pytest.mark.parametrize(("argv", "parsed"), [
    (["rollback", "web"], ("rollback", "web", "", False)),
    (["deploy", "rollback", "web", "--reason", "bad p99", "--json"],
     ("rollback", "web", "bad p99", True)),
    (["abort", "--reason=oops", "web"], ("abort", "web", "oops", False)),
    (["rollback", "web", "--help"], None),
    (["rollback", "--help"], None),
    (["rollback"], None),
    (["rollback", "web", "other"], None),
    (["rollback", "web", "--force"], None),
    (["promote", "web"], None),
    (["deploy", "status"], None),
    ([], None),
])
def test_only_a_plain_rollback_or_abort_is_taken_before_typer(
    argv: list[str], parsed: tuple[str, str, str, bool] | None
) -> None:
    assert parse(argv) == parsed


def test_a_rollback_switches_the_router_before_typer_loads(
    nginx: None, env: dict[str, str]  # noqa: F811
) -> None:
    run(env, "create", "web", "--model", "stub", "--version", "stable")
    run(env, "update", "web", "--version", "1.1.0")
    run(env, "promote", "web")
    url = json.loads(run(env, "status", "web", "--json"))["url"]
    assert colors(url, 5) == {"green:1.1.0": 5}
    proc = subprocess.run([sys.executable, "-c", _PROBE, "rollback", "web", "--reason", "p99"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "web: rolled back to 1.0.0" in proc.stdout
    applies = json.loads(proc.stderr.strip().splitlines()[-1])
    assert len(applies) == 1, applies  # one switch
    early = set(applies[0]) & NOT_BEFORE_THE_SWITCH
    assert not early, early
    assert colors(url, 5) == {"blue:1.0.0": 5}
    history = json.loads(run(env, "history", "web", "--json"))
    assert history[-1]["action"] == "rollback" and history[-1]["reason"] == "p99"
    assert history[-1]["by"] == "cli"
    # --help and mistakes are typer's, as before
    proc = subprocess.run([sys.executable, "-m", "workbench", "rollback", "--help"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "All traffic back to stable" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "workbench", "deploy", "rollback", "web", "--force"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "No such option: --force" in proc.stderr
