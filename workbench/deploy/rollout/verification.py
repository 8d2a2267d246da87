"""Is a serving instance fit for traffic? The checks a rollout runs before it lets one in.

:func:`wait_healthy` blocks until a new instance is ready and passes its deep health
check (``create`` and ``restore`` use it). :class:`Probe` answers the rollout's
questions about a candidate one HTTP call at a time (``rollout.advance`` asks):
does it run, is it ready, does its deep health check pass, do its outputs agree
with the stable colour's on the sample inputs (:func:`agreement_samples`).
"""

from __future__ import annotations

import logging
import time
import zipfile
from typing import TYPE_CHECKING, Any

from workbench.deploy.rollout.phases import Verdict
from workbench.errors import BackendError, DeployError, WorkbenchError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from workbench.deploy.backends.base import Backend, Instance
    from workbench.deploy.client import ServingClient
    from workbench.deploy.rollout.agreement import AgreementReport
    from workbench.deploy.state import DeploymentState, InstanceRecord, Plan

__all__ = ["Probe", "agreement_samples", "wait_healthy"]

log = logging.getLogger(__name__)


def wait_healthy(engine: Backend, instance: Instance, timeout: float) -> None:
    """Wait for readiness, then run the deep health check (BackendError on failure)."""
    from workbench.deploy.client import ServingClient

    deadline = time.monotonic() + timeout
    with ServingClient(instance.url, timeout=60.0) as client:
        while True:
            if not engine.is_running(instance):
                tail = engine.logs(instance, tail=15).strip()
                raise BackendError(
                    f"{instance.spec.deployment}/{instance.spec.color} "
                    f"({instance.spec.model} {instance.spec.version}) exited before it was "
                    f"ready" + (f"; last lines of its log:\n{tail}" if tail else "")
                )
            health = client.ready()
            if health.ok:
                break
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{instance.spec.color} was not ready within {timeout:g}s: {health.error}"
                )
            time.sleep(0.1)
        deep = client.deep_health()
    if not deep.ok:
        raise BackendError(f"{instance.spec.color} failed its deep health check: {deep.error}")


class Probe:
    """Looks at a deployment's candidate for ``rollout.advance`` (one HTTP call per check).

    ``engine`` is the backend that runs the deployment's instances. After an
    agreement check, :attr:`report` holds its full report (to persist).
    """

    def __init__(self, state: DeploymentState, engine: Backend) -> None:
        self.state = state
        self.engine = engine
        self.report: AgreementReport | None = None

    def _client(self, record: InstanceRecord, timeout: float = 10.0) -> ServingClient:
        from workbench.deploy.client import ServingClient

        return ServingClient(record.url, timeout=timeout)

    def running(self) -> Verdict:
        record = self.state.candidate
        if record is None:
            return Verdict.pending("waiting for the backend to start the candidate")
        instance = record.to_instance(self.state)
        if self.engine.is_running(instance):
            return Verdict.passed()
        tail = self.engine.logs(instance, tail=15).strip()
        return Verdict.failed(
            f"the candidate ({record.version}, {record.backend} {record.ref}) exited"
            + (f"; last lines of its log:\n{tail}" if tail else "")
        )

    def ready(self) -> Verdict:
        record = self.state.candidate
        assert record is not None
        with self._client(record) as client:
            health = client.ready()
        if health.ok:
            return Verdict.passed(f"{record.color} {record.version} is ready")
        return Verdict.pending(f"waiting for {record.color} to be ready ({health.error})")

    def deep_health(self) -> Verdict:
        record = self.state.candidate
        assert record is not None
        with self._client(record, timeout=60.0) as client:
            health = client.deep_health()
        if health.ok:
            seconds = health.detail.get("seconds")
            took = f" in {float(seconds) * 1000:.0f} ms" if isinstance(seconds, int | float) else ""
            return Verdict.passed(f"deep health check passed{took}")
        if health.status is None:
            return Verdict.pending(f"deep health check unreachable: {health.error}")
        return Verdict.failed(health.error or f"status {health.status}")

    def agreement(self) -> Verdict:
        from workbench.deploy.rollout.agreement import check_agreement

        stable, candidate = self.state.stable, self.state.candidate
        assert candidate is not None
        if stable is None:
            return Verdict.passed("no stable instance to compare with")
        plan = self.state.plan
        try:
            batches = agreement_samples(self.state, plan)
        except WorkbenchError as exc:
            return Verdict.failed(str(exc))
        threshold = plan.min_agreement if plan else 0.0
        if not batches:
            if threshold > 0:
                return Verdict.failed(
                    f"no sample inputs to check the agreement threshold {threshold:.0%} on; "
                    "give --sample, or --min-agreement 0 to skip the check"
                )
            return Verdict.passed("no sample inputs to compare on (agreement not checked)")
        with self._client(stable, 60.0) as left, self._client(candidate, 60.0) as right:
            report = check_agreement(
                left,
                right,
                self.state.model,
                batches,
                min_top1=threshold,
                stable_version=stable.version,
                candidate_version=candidate.version,
            )
        self.report = report
        return Verdict(report.passed, report.summary())


def agreement_samples(
    state: DeploymentState, plan: Plan | None
) -> list[tuple[str, Mapping[str, Any]]]:
    """The agreement inputs: both versions' manifest samples and the plan's sample file."""
    from workbench.deploy.rollout.agreement import load_sample_file

    batches: list[tuple[str, Mapping[str, Any]]] = []
    names: list[str] = []
    versions = [v for v in (state.candidate_version, state.stable_version) if v]
    try:
        from workbench.model.repository import ModelRepository

        repo = ModelRepository(state.repo)
        for version in dict.fromkeys(versions):
            try:
                manifest = repo.manifest(state.model, version)
            except WorkbenchError as exc:
                log.info("%s: no manifest for %s: %s", state.name, version, exc)
                continue
            names = names or [t.name for t in manifest.inputs]
            try:
                sample = repo.sample(state.model, version)
            except (WorkbenchError, OSError, ValueError, zipfile.BadZipFile) as exc:
                # a sample that is there but unreadable must not let the check pass
                raise DeployError(f"cannot read the manifest sample of {version}: {exc}") from exc
            if not sample:
                continue
            if not any(_same(sample, seen) for _, seen in batches):
                batches.append((f"manifest sample of {version}", sample))
    except ImportError:  # pragma: no cover
        pass
    if plan is not None and plan.sample_file:
        if not names and batches:
            names = list(batches[0][1])
        batches.append((plan.sample_file, load_sample_file(plan.sample_file, names)))
    return batches


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    import numpy as np

    return a.keys() == b.keys() and all(
        np.shape(a[k]) == np.shape(b[k]) and bool(np.array_equal(a[k], b[k])) for k in a
    )
