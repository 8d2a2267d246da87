"""KubernetesBackend's calls and failure paths against the in-memory API emulator.

No API server runs on these machines: the emulator (``emulator.py``) answers the real
``kubernetes`` client over HTTP on loopback and plays the Deployment controller by
setting status; it does not run pods.
"""

from __future__ import annotations

import pytest

from tests.deploy.platforms.kubernetes.conftest import spec
from tests.deploy.platforms.kubernetes.emulator import Broken, Emulator
from workbench.errors import BackendError, DeployValueError


def test_start_applies_the_colour_and_waits_until_it_is_available(make_backend, emulator: Emulator) -> None:
    emulator.ready_after = 3
    backend = make_backend(replicas=2)
    instance = backend.start(spec("blue"))
    assert instance.url == "http://web-blue.ml.svc:8000"
    assert instance.ref == "ml/web-blue" and instance.backend == "kubernetes"
    assert emulator.writes() == ["PATCH secrets/wb-web-admin", "PATCH deployments/web-blue",
                                 "PATCH services/web-blue", "PATCH horizontalpodautoscalers/web-blue",
                                 "PATCH poddisruptionbudgets/web-blue"]
    applied = [c for c in emulator.calls if c.method == "PATCH"]
    assert all(c.content_type == "application/apply-patch+yaml" for c in applied)
    deployment = emulator.obj("deployments", "web-blue")
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/paddle-workbench:1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "s3cret" not in str(container)  # the admin token comes from the Secret
    # progress was reported while waiting, then readiness
    assert any("0 of 2 updated replicas are available" in line for line in backend.lines)
    assert backend.lines[-1] == "web-blue: ready (2 of 2 replicas available)"
    assert backend.is_running(instance)
    assert [i.spec.color for i in backend.find("web")] == ["blue"]


def test_readiness_is_the_deployments_own_not_a_probe_from_outside_the_cluster(
        make_backend, emulator: Emulator) -> None:
    # the Service's in-cluster name does not resolve here: an HTTP probe could only fail
    backend = make_backend(replicas=2)
    instance = backend.start(spec("blue"))
    assert tuple(backend.readiness(instance)) == (True, True, "")
    emulator.broken["web-blue"] = Broken()  # its pods crash from now on
    running, ready, why = backend.readiness(instance)
    assert (running, ready) == (False, False)
    assert why.startswith("0 of 2 replicas available; pod web-blue-7d9f-x1: CrashLoopBackOff")
    emulator.broken.clear()
    backend.api.apply({**(emulator.obj("deployments", "web-blue") or {}),
                       "spec": {**(emulator.obj("deployments", "web-blue") or {})["spec"],
                                "replicas": 0}})
    assert tuple(backend.readiness(instance)) == (True, False, "scaled to zero while it takes no traffic")
    emulator.objects.clear()
    assert tuple(backend.readiness(instance)) == (False, False, "Deployment web-blue is gone")


def test_a_candidate_starts_with_preview_replicas(make_backend, emulator: Emulator) -> None:
    backend = make_backend(replicas=4, preview_replicas=1, gpus=1)
    backend.start(spec("blue"))
    backend.start(spec("green", "1.1.0"))
    green = emulator.obj("deployments", "web-green") or {}
    assert green["spec"]["replicas"] == 1
    limits = green["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert (emulator.obj("deployments", "web-blue") or {})["spec"]["replicas"] == 4


@pytest.mark.parametrize(
    ("broken", "reason"),
    [(Broken(), "CrashLoopBackOff (back-off 40s restarting failed container=serve)"),
     (Broken("ImagePullBackOff", 'Back-off pulling image "registry.example/nope"', "Failed"),
      "ImagePullBackOff"),
     (Broken("ErrImagePull", "manifest unknown", "Failed"), "ErrImagePull (manifest unknown)")],
)
def test_a_candidate_that_never_becomes_ready_leaves_the_stable_colour_untouched(
    make_backend, emulator: Emulator, broken: Broken, reason: str
) -> None:
    backend = make_backend()
    backend.start(spec("blue"))
    blue_before = emulator.obj("deployments", "web-blue")
    svc_before = emulator.obj("services", "web-blue")
    emulator.calls.clear()
    emulator.broken["web-green"] = broken
    with pytest.raises(BackendError) as info:
        backend.start(spec("green", "1.1.0"))
    message = str(info.value)
    assert message.startswith(f"web-green did not become ready: pod web-green-7d9f-x1: {reason}")
    assert "events: " in message and "\n" not in message
    # only the candidate's objects were written, and they are gone again
    assert all("web-green" in w or "wb-web-admin" in w for w in emulator.writes())
    assert emulator.obj("deployments", "web-green") is None
    assert emulator.obj("services", "web-green") is None
    assert emulator.obj("deployments", "web-blue") == blue_before
    assert emulator.obj("services", "web-blue") == svc_before


def test_a_candidate_still_starting_at_the_timeout_is_reported(make_backend, emulator: Emulator) -> None:
    emulator.ready_after = 10_000
    backend = make_backend(ready_timeout=1.0)
    with pytest.raises(BackendError, match=r"web-blue did not become ready: not ready within 1s "
                                           r"\(0 of 1 updated replicas are available\)"):
        backend.start(spec("blue"))
    assert emulator.obj("deployments", "web-blue") is None


def test_a_deadline_the_controller_gave_up_on_fails_at_once(make_backend, emulator: Emulator, api) -> None:
    emulator.ready_after = 10_000
    backend = make_backend(ready_timeout=30.0)
    for obj in backend.objects(spec("blue"), 1):
        api.apply(obj)
    key = next(k for k in emulator.objects if k[2:] == ("deployments", "web-blue"))
    emulator.objects[key]["status"] = {
        "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                        "message": 'ReplicaSet "web-blue-7d9f" has timed out progressing.'}]}
    emulator._reconcile = lambda key: None  # type: ignore[method-assign]  # the controller stopped
    with pytest.raises(BackendError, match="progress deadline exceeded: ReplicaSet"):
        backend.wait_ready("web-blue", 30.0)


@pytest.mark.parametrize(
    ("status", "words"),
    [(403, 'forbidden (deployments.apps "web-blue" is forbidden: User "tester" cannot patch); '
           "the context's user lacks the RBAC permission"),
     (422, "the object is invalid (Deployment.apps \"web-blue\" is invalid: spec.template...)")],
)
def test_api_errors_while_starting_are_one_sentence(make_backend, emulator: Emulator, status: int,
                                                    words: str) -> None:
    messages = {403: 'deployments.apps "web-blue" is forbidden: User "tester" cannot patch',
                422: 'Deployment.apps "web-blue" is invalid: spec.template...'}
    emulator.fail("PATCH", "/deployments/web-blue$", status, messages[status])
    with pytest.raises(BackendError) as info:
        make_backend().start(spec("blue"))
    assert str(info.value).startswith(
        f"the Kubernetes API refused to patch Deployment ml/web-blue: {words}")
    assert "\n" not in str(info.value)


def test_a_refused_apply_midway_leaves_nothing_of_the_colour(make_backend, emulator: Emulator) -> None:
    emulator.fail("PATCH", "/services/web-blue$", 422, 'Service "web-blue" is invalid: spec.ports')
    with pytest.raises(BackendError, match=r"refused to patch Service ml/web-blue: the object is invalid"):
        make_backend().start(spec("blue"))
    assert "PATCH deployments/web-blue" in emulator.writes()  # applied before the refusal ...
    assert emulator.obj("deployments", "web-blue") is None  # ... and deleted after it


def test_stop_deletes_the_colour_and_is_idempotent(make_backend, emulator: Emulator) -> None:
    backend = make_backend()
    blue = backend.start(spec("blue"))
    green = backend.start(spec("green", "1.1.0"))
    backend.stop(green)
    backend.stop(green)
    assert not backend.is_running(green) and backend.is_running(blue)
    assert emulator.obj("deployments", "web-green") is None
    assert [i.spec.color for i in backend.find("web")] == ["blue"]
    assert emulator.obj("secrets", "wb-web-admin") is not None
    backend.stop(blue)
    assert emulator.obj("secrets", "wb-web-admin") is None  # gone with the last colour


def test_logs_come_from_the_colour_pod(make_backend, emulator: Emulator) -> None:
    backend = make_backend()
    blue = backend.start(spec("blue"))
    emulator.logs["web-blue-7d9f-x1"] = [f"line {i}" for i in range(10)]
    assert backend.logs(blue, tail=2) == "line 8\nline 9\n"


def test_options_are_checked_by_name(make_backend) -> None:
    with pytest.raises(DeployValueError, match="unknown kubernetes backend option 'gpu'"):
        make_backend(gpu=1)
    with pytest.raises(DeployValueError, match="replicas must be a number"):
        make_backend(replicas="two")


def test_an_apply_conflict_on_a_workbench_object_takes_the_fields_back(make_backend, emulator: Emulator) -> None:
    backend = make_backend()
    backend.start(spec("blue"))
    emulator.fail("PATCH", "/deployments/web-blue$", 409,
                  'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas')
    backend.start(spec("blue"))
    applies = [c for c in emulator.calls if c.method == "PATCH" and c.path.endswith("/deployments/web-blue")]
    assert [c.status for c in applies[-2:]] == [409, 200]
    assert "force" not in applies[-2].query and applies[-1].query["force"] == "true"
    assert all(c.query["fieldManager"] == "workbench" for c in applies)


def test_an_apply_conflict_on_someone_elses_object_is_refused(make_backend, emulator: Emulator) -> None:
    from workbench.deploy.platforms.kubernetes.client import ApplyConflict

    emulator.objects[("apis/apps/v1", "ml", "deployments", "web-blue")] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web-blue", "namespace": "ml", "resourceVersion": "1", "generation": 1,
                     "uid": "u1", "labels": {"app": "theirs"}}, "spec": {"replicas": 5}}
    emulator.fail("PATCH", "/deployments/web-blue$", 409,
                  'Apply failed with 1 conflict: conflict with "helm" using apps/v1: .spec.replicas')
    with pytest.raises(BackendError) as info:
        make_backend().start(spec("blue"))
    assert isinstance(info.value.__cause__, ApplyConflict)
    assert str(info.value).startswith("cannot apply Deployment ml/web-blue: it was not made by the workbench")
    assert 'conflict with "helm"' in str(info.value)
    forced = [c for c in emulator.calls if c.query.get("force") == "true"]
    assert not forced
    assert (emulator.obj("deployments", "web-blue") or {})["spec"]["replicas"] == 5  # theirs, untouched


def test_a_colour_runs_with_its_serve_options_and_a_candidate_with_its_faults(
        make_backend, emulator: Emulator) -> None:
    """Per-segment counting on every colour and chaos faults on the candidate reach the
    pods' ``workbench serve``, as they reach a process's or a container's."""
    from dataclasses import replace

    counting = ("--segment-by", "header:x-tenant", "--max-segments", "4")
    faults = ("--fault-error-rate", "0.3", "--fault-latency-ms", "40")
    backend = make_backend()
    backend.start(replace(spec("blue"), extra_args=counting))
    backend.start(replace(spec("green", "1.1.0"), extra_args=counting, faults=faults))

    def args(color: str) -> list[str]:
        deployment = emulator.obj("deployments", f"web-{color}")
        assert deployment is not None
        return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])

    blue, green = args("blue"), args("green")
    assert blue[-4:] == list(counting) and "--fault-error-rate" not in blue, blue
    assert green[-8:] == [*counting, *faults], green
    assert "--graceful-timeout" in green  # the backend's own options stay
