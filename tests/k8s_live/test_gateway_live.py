"""The Gateway API HTTPRoutes the export writes, stored by a live API server.

The HTTPRoute CRD (Gateway API v1, installed by .ci/k8s-setup.sh from the pinned upstream
schema) validates and defaults what it stores. What is proven here: the server accepts
the routes, keeps every field the export wrote (no pruning: the schema knows them all)
and refuses a route its schema forbids. What is NOT proven: that a Gateway implementation
routes by them. No Gateway controller can run on this machine (none is packaged for
Debian, PyPI or npm, and no image registry is reachable), so the routes' ``status``
(Accepted, ResolvedRefs) is never written and no traffic goes through a Gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.k8s_live._cluster import cli_export

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster


def contains(actual: Any, expected: Any, where: str = "spec") -> None:
    """Every field of ``expected`` is in ``actual`` with the same value (the server may add defaults)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} was dropped by the server"
            contains(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            contains(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("fmt", ["k8s", "argo-rollouts"])
def test_httproute_stored_as_written(cluster: Cluster, namespace: str, tmp_path: Path, fmt: str) -> None:
    out = cli_export(tmp_path / "export", fmt, "gateway", namespace)
    route = yaml.safe_load((out / "httproute-web.yaml").read_text())
    cluster.kubectl("apply", "-f", str(out / "httproute-web.yaml"))
    stored = cluster.get("httproute.gateway.networking.k8s.io", route["metadata"]["name"], "-n", namespace)
    assert stored["apiVersion"] == "gateway.networking.k8s.io/v1"
    contains(stored["spec"], route["spec"])
    contains(stored["metadata"]["labels"], route["metadata"]["labels"], "metadata.labels")
    # no Gateway controller runs here: nobody has accepted the route
    assert not stored.get("status", {}).get("parents")


def test_httproute_schema_refuses_invalid(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """The installed schema is enforced: a negative backend weight is refused, nothing is stored."""
    out = cli_export(tmp_path / "export", "k8s", "gateway", namespace)
    route = yaml.safe_load((out / "httproute-web.yaml").read_text())
    weighted = [ref for rule in route["spec"]["rules"] for ref in rule["backendRefs"] if "weight" in ref]
    assert weighted, route
    weighted[0]["weight"] = -1
    proc = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(route), check=False)
    assert proc.returncode != 0
    assert "weight" in proc.stderr, proc.stderr
    assert cluster.get("httproutes.gateway.networking.k8s.io", "-n", namespace)["items"] == []
