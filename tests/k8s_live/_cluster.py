"""The live cluster as the tests see it: kubectl as the admin, API requests with any token."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app


@dataclass(frozen=True)
class Cluster:
    """The live cluster: its admin kubeconfig, and requests with any bearer token."""

    kubeconfig: Path
    server: str
    ca_file: Path
    admin_token: str

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``kubectl`` as the admin; raises with its stderr when ``check`` and it fails."""
        proc = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def get(self, *args: str) -> Any:
        """``kubectl get ... -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """One API request (TLS verified against the cluster's CA); returns (status, parsed body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(req, context=context, timeout=30) as resp:
                return resp.status, _parse(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _parse(exc.read())

    def served_group_versions(self) -> set[str]:
        """Every group/version the server serves (discovery: /api and /apis)."""
        status, core = self.request("GET", "/api")
        assert status == 200, core
        status, groups = self.request("GET", "/apis")
        assert status == 200, groups
        served = set(core["versions"])
        for group in groups["groups"]:
            served.update(version["groupVersion"] for version in group["versions"])
        return served


def _parse(body: bytes) -> Any:
    """JSON, or the text itself (/readyz answers ``ok``)."""
    try:
        return json.loads(body or b"{}")
    except ValueError:
        return body.decode("utf-8", "replace")


def load(kubeconfig: Path) -> Cluster:
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    ca = Path(tempfile.mkdtemp(prefix="wb-k8s-ca-")) / "ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return Cluster(kubeconfig=kubeconfig, server=cluster["server"].rstrip("/"), ca_file=ca,
                   admin_token=user["token"])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def cli_export(out: Path, fmt: str, router: str | None, namespace: str) -> Path:
    """``workbench deploy export`` of a canary (digits 1.0.0, 10 % to 1.1.0) into ``out``."""
    args = ["deploy", "export", "web", "--out", str(out), "--format", fmt, "--model", "digits",
            "--version", "1.0.0", "--candidate", "1.1.0", "--weight", "10", "--namespace", namespace,
            "--image", "paddle-workbench:test", "--hostname", "digits.example.com"]
    if router is not None:
        args += ["--router", router]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out
