"""Is a serving instance fit for traffic? The checks a rollout runs before it lets one in.

:func:`wait_healthy` blocks until a new instance is ready and passes its deep health
check (``create`` and ``restore`` use it). :class:`Probe` answers the rollout's
questions about a candidate one HTTP call at a time (``rollout.advance`` asks):
does it run, is it ready, does its deep health check pass, do its outputs agree
with the stable colour's on the sample inputs (:func:`agreement_samples`), judged by the
candidate manifest's task (:func:`declared_task`; top-1 when it declares none).
"""

from __future__ import annotations

import logging
import time
import zipfile
from typing import TYPE_CHECKING, Any

from workbench.deploy.rollout.phases import Verdict
from workbench.errors import BackendError, DeployError, WorkbenchError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from workbench.deploy.backend import Backend, Instance
    from workbench.deploy.client import ServingClient
    from workbench.deploy.records import InstanceRecord
    from workbench.deploy.rollout.agreement import AgreementReport
    from workbench.deploy.state import DeploymentState, Plan
    from workbench.model.task import Task

__all__ = ["Probe", "agreement_samples", "agreement_verdict", "check_sample", "declared_task",
           "is_pipeline", "wait_healthy"]

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

    def _need(self) -> int:
        """How many of the candidate's instances must pass (all, or the state's min_ready)."""
        candidate = self.state.candidate
        return self.state.needed(len(candidate) if candidate is not None else None)

    def running(self) -> Verdict:
        """Passes while enough of the candidate's instances run; fails once too many exited."""
        group = self.state.candidate
        if group is None:
            return Verdict.pending("waiting for the backend to start the candidate")
        exited: list[str] = []
        for record in group:
            instance = record.to_instance(self.state)
            if self.engine.is_running(instance):
                continue
            tail = self.engine.logs(instance, tail=15).strip()
            where = f" on {record.where}" if record.where else ""
            exited.append(
                f"the candidate ({record.version}, {record.backend} {record.ref}{where}) exited"
                + (f"; last lines of its log:\n{tail}" if tail else "")
            )
        if len(group) - len(exited) >= self._need():
            return Verdict.passed()
        return Verdict.failed("; ".join(exited))

    def ready(self) -> Verdict:
        group = self.state.candidate
        assert group is not None
        errors = []
        for record in group:
            with self._client(record) as client:
                health = client.ready()
            if not health.ok:
                errors.append(f"{record.url}: {health.error}")
        count = len(group) - len(errors)
        if count >= self._need():
            of = f" ({count} of {len(group)} instances)" if len(group) > 1 else ""
            return Verdict.passed(f"{group.color} {group.version} is ready{of}")
        return Verdict.pending(f"waiting for {group.color} to be ready ({'; '.join(errors)})")

    def deep_health(self) -> Verdict:
        """Passes when enough instances pass their deep health check; an instance that answers
        it with a failure fails the candidate (the same version fails the same way elsewhere)."""
        group = self.state.candidate
        assert group is not None
        passed: list[float | None] = []
        pending: list[str] = []
        for record in group:
            with self._client(record, timeout=60.0) as client:
                health = client.deep_health()
            if health.ok:
                seconds = health.detail.get("seconds")
                passed.append(float(seconds) if isinstance(seconds, int | float) else None)
            elif health.status is None:
                pending.append(f"{record.url}: {health.error}")
            else:
                return Verdict.failed(health.error or f"status {health.status}")
        if len(passed) < self._need():
            return Verdict.pending(f"deep health check unreachable: {'; '.join(pending)}")
        times = [t for t in passed if t is not None]
        took = f" in {max(times) * 1000:.0f} ms" if times else ""
        of = f" on {len(passed)} of {len(group)} instances" if len(group) > 1 else ""
        return Verdict.passed(f"deep health check passed{of}{took}")

    def agreement(self) -> Verdict:
        from workbench.deploy.rollout.agreement import check_agreement

        stable, candidate = self.state.stable, self.state.candidate
        assert candidate is not None
        if stable is None:
            return Verdict.passed("no stable instance to compare with")
        plan = self.state.plan
        if is_pipeline(self.state.repo, self.state.model, candidate.version):
            return self._pages_agreement(plan)
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
        # one instance of each colour: every instance of a colour serves the same files
        with self._client(stable.records[0], 60.0) as left, \
                self._client(candidate.records[0], 60.0) as right:
            report = check_agreement(
                left,
                right,
                self.state.model,
                batches,
                min_top1=threshold,
                stable_version=stable.version,
                candidate_version=candidate.version,
                task=declared_task(self.state),
                decode=_decoder(self.state),
            )
        verdict = agreement_verdict(report)
        if verdict.ok is not None:  # a pending check leaves no report (nor history entry)
            self.report = report
        return verdict

    def _pages_agreement(self, plan: Plan | None) -> Verdict:
        """An OCR pipeline's agreement check: the sample images (``--sample``, a directory)
        read by both colours, the candidate's pages scored against stable's by CER."""
        from workbench.deploy.rollout.pages import load_images, pages_agreement  # numpy

        stable, candidate = self.state.stable, self.state.candidate
        assert stable is not None and candidate is not None
        threshold = plan.min_agreement if plan else 0.0
        if plan is None or not plan.sample_file:
            if threshold > 0:
                return Verdict.failed(
                    f"{candidate.version} is an OCR pipeline: give sample images (--sample, a "
                    f"directory) to check the agreement threshold {threshold:.0%} on, or "
                    "--min-agreement 0 to skip the check"
                )
            return Verdict.passed("no sample images to compare on (agreement not checked)")
        try:
            sample = load_images(plan.sample_file)
        except WorkbenchError as exc:
            return Verdict.failed(str(exc))
        with self._client(stable.records[0], 120.0) as left, \
                self._client(candidate.records[0], 120.0) as right:
            report = pages_agreement(left, right, self.state.model, [sample],
                                     min_agreement=threshold, stable_version=stable.version,
                                     candidate_version=candidate.version)
        self.report = report
        return Verdict(report.passed, report.summary())


def agreement_verdict(report: AgreementReport) -> Verdict:
    """Passed or failed as ``report`` says; pending while a busy or unreachable colour left
    sample batches unanswered (a 503, a timeout): asked again at the next look, until the
    verification deadline, since a provider error is no verdict on the outputs."""
    if report.retry and not report.errors:
        return Verdict.pending(report.summary())
    return Verdict(report.passed, report.summary())


def is_pipeline(repo: str, model: str, version: str | None) -> bool:
    """Whether ``model`` ``version`` is a pipeline version (False when it cannot be read)."""
    from workbench.model.repository import ModelRepository

    if not version:
        return False
    try:
        return ModelRepository(repo).kind(model, version) == "pipeline"
    except (WorkbenchError, OSError, ValueError):
        return False


def check_sample(state: DeploymentState, version: str, sample: str) -> None:
    """Read ``sample`` as verification will, before anything starts (DeployError if bad):
    an ``.npz``/``.npy`` of the version's inputs, or sample images for a pipeline."""
    from workbench.deploy.rollout.agreement import load_sample_file  # numpy
    from workbench.deploy.rollout.pages import load_images
    from workbench.model.repository import ModelRepository

    if is_pipeline(state.repo, state.model, version):
        load_images(sample)
        return
    try:
        inputs = ModelRepository(state.repo).manifest(state.model, version).inputs
    except WorkbenchError as exc:
        raise DeployError(f"cannot check sample file {sample}: {exc}") from exc
    load_sample_file(sample, [t.name for t in inputs])


def declared_task(state: DeploymentState) -> Task | None:
    """The task the candidate's manifest declares (None: unknown, or none declared)."""
    from workbench.model.repository import ModelRepository
    from workbench.runtime.scoring import declared_task as task_of

    version = state.candidate_version or state.stable_version
    if not version:
        return None
    try:
        return task_of(ModelRepository(state.repo).manifest(state.model, version))
    except (WorkbenchError, ValueError) as exc:
        log.info("%s: cannot read the task of %s: %s", state.name, version, exc)
        return None


def _decoder(state: DeploymentState) -> Callable[[str, Any], list[Any]] | None:
    """Both colours' codecs (detection/recognition versions published with one), or None."""
    from workbench.codecs import Codec
    from workbench.model.repository import ModelRepository
    from workbench.runtime.decoders import codec_decoder

    versions = [v for v in (state.stable_version, state.candidate_version) if v]
    try:
        repo = ModelRepository(state.repo)
        return codec_decoder({v: repo.manifest(state.model, v) for v in versions}, Codec)
    except (WorkbenchError, ValueError) as exc:
        log.info("%s: no codecs to decode with: %s", state.name, exc)
        return None


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
