"""A candidate that answers one tenant differently, rolled back naming the tenant: real nginx,
real ``workbench serve`` instances of the demo digits model, the canary run from the
command line (``deploy update --strategy canary --analysis …``), client traffic of two
tenants through the router.

Stable serves 1.0.0 with ``--segment-by header:x-tenant``, so it keeps a sample of each
tenant's requests. Tenant a sends the held-out digits on which 1.1.0 reads the same digit
as 1.0.0; tenant b, one request in twenty, the ones on which it does not. Pooled, 1.1.0
agrees on about 95% of stable's sample, above the 80% minimum (and the 85% of the
verification before traffic moves); on tenant b's own sample it agrees on none, and the
agreement rule judged per segment rolls it back at its first step, naming the tenant.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.deploy.test_canary_segments_live import Tenants, segment_rollback, workbench

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.nginx, pytest.mark.slow]
ANALYSIS = """\
steps = [50, 100]
interval = "30s"
max_inconclusive = 20
latency = false
relative_latency = false
memory = false
accuracy = false

[agreement]
segment_by = "header:x-tenant"
max_segments = 4
"""


def split_rows(demo_repo: Path) -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits 1.1.0 reads as 1.0.0 does, and those it reads otherwise."""
    from workbench import ModelRepository, VersionHub
    from workbench.model.demo import digits_dataset

    x = digits_dataset()[2]
    with VersionHub(ModelRepository(demo_repo), "digits", device="cpu",
                    isolation="thread") as hub:
        read = {}
        for version in ("1.0.0", "1.1.0"):
            hub.load(version)
            (out,) = hub.predict({"x": x}, version=version).outputs.values()
            read[version] = np.asarray(out).argmax(axis=-1)
    same = read["1.0.0"] == read["1.1.0"]
    return x[same], x[~same]


class RowTenants(Tenants):
    """Tenant a's rows and tenant b's, each in turn; one request in twenty is b's."""

    def __init__(self, url: str, rows: dict[str, np.ndarray], rate: float = 40.0) -> None:
        super().__init__(url, rate, every=20)
        self.rows = rows
        self.sent = {"a": 0, "b": 0}

    def row(self, tenant: str) -> np.ndarray:
        rows = self.rows[tenant]
        self.sent[tenant] += 1
        return np.asarray(rows[(self.sent[tenant] - 1) % len(rows)][None, :])


def test_a_tenant_the_candidate_reads_otherwise_is_rolled_back_naming_it(
    nginx: None, demo_repo: Path, home: Path, tmp_path: Path,
) -> None:
    agreeing, disagreeing = split_rows(demo_repo)
    assert 10 <= len(disagreeing) <= 60  # about 6% of the 540 held-out digits
    cli_env = {"WORKBENCH_HOME": str(home), "WORKBENCH_REPO": str(demo_repo), "COLUMNS": "200"}
    analysis = tmp_path / "tenants.toml"
    analysis.write_text(ANALYSIS)
    try:
        made = workbench(cli_env, "deploy", "create", "web", "--model", "digits", "--version",
                         "1.0.0", "--segment-by", "header:x-tenant", "--max-segments", "4")
        assert made.returncode == 0, made.stderr
        url = json.loads(workbench(cli_env, "deploy", "status", "web", "--json").stdout)["url"]
        with RowTenants(url, {"a": agreeing, "b": disagreeing}) as tenants:
            deadline = time.monotonic() + 120
            while tenants.count("b") < len(disagreeing) and time.monotonic() < deadline:
                time.sleep(0.5)  # stable's sample of tenant b holds each of its rows
            updated = workbench(cli_env, "deploy", "update", "web", "--version", "1.1.0",
                                "--strategy", "canary", "--analysis", str(analysis))
        status = json.loads(workbench(cli_env, "deploy", "status", "web", "--json").stdout)
        history = json.loads(workbench(cli_env, "deploy", "history", "web", "--json").stdout)
    finally:
        workbench(cli_env, "deploy", "delete", "web", "--yes", timeout=120)
    decision = segment_rollback(updated, status, history, "agreement", "x-tenant=b")["decision"]
    assert decision["estimate"] == 0.0  # 1.1.0 read none of tenant b's rows as 1.0.0 did
    # tenant a's sample, and stable's pooled sample, did not fail it
    assert decision["segments"]["a"]["verdict"] != "fail"
    assert decision["overall"]["verdict"] != "fail" and not decision["overall"]["sustained"]
    assert tenants.count("a", "1.1.0") > 0 and tenants.failed == 0, tenants.answers
