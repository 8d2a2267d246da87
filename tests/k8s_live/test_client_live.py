"""The Kubernetes backend's API client (KubeApi) against the live 1.20 API server.

What the backend's writes rely on, on a real server: server-side apply as the
``workbench`` field manager, JSON merge patches, replaces guarded by ``resourceVersion``
(a stale one is a 409 ClusterError), reads of what is absent as None, a Lease. And the
one thing that stops the backend on 1.20: it applies each colour's HPA and PDB at
``autoscaling/v2`` and ``policy/v1``, which the server answers 404 unless discovery lists
them; the same objects at the served pre-releases are taken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.k8s_live._cluster import wait_until
from workbench.deploy.platforms.kubernetes.client import KubeApi
from workbench.deploy.platforms.kubernetes.options import KubernetesOptions
from workbench.deploy.platforms.kubernetes.routes import deployment_objects
from workbench.errors import ClusterError

if TYPE_CHECKING:
    from tests.k8s_live._cluster import Cluster

#: what the backend writes -> the served pre-release of the same major version on 1.20
PRE_RELEASE = {"autoscaling/v2": "autoscaling/v2beta2", "policy/v1": "policy/v1beta1"}


@pytest.fixture
def api(cluster: Cluster, namespace: str) -> KubeApi:
    return KubeApi.connect(config_file=str(cluster.kubeconfig), namespace=namespace, timeout=30)


def color_objects(namespace: str) -> list[dict[str, Any]]:
    opts = KubernetesOptions(namespace=namespace, router="service", image="paddle-workbench:test")
    return deployment_objects(opts, "web", "digits", {"blue": "1.0.0"}, {"blue": 100}, stable="blue")


def test_server_side_apply_patch_and_optimistic_replace(api: KubeApi, namespace: str) -> None:
    (deployment,) = [o for o in color_objects(namespace) if o["kind"] == "Deployment"]
    name = deployment["metadata"]["name"]
    applied = api.apply(deployment)
    managers = {(f["manager"], f["operation"]) for f in applied["metadata"]["managedFields"]}
    assert ("workbench", "Apply") in managers
    assert api.list("apps/v1", "Deployment", labels=deployment["metadata"]["labels"])[0]["metadata"]["name"] == name

    patched = api.patch("apps/v1", "Deployment", name, {"metadata": {"annotations": {"wb-test": "1"}}})
    assert patched["metadata"]["annotations"]["wb-test"] == "1"

    # optimistic concurrency, on a ConfigMap (as the state store keeps it; no controller
    # writes it meanwhile, as the deployment controller does a Deployment's status)
    state = api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "wb-state"},
                        "data": {"n": "0"}})
    first = api.replace({**state, "data": {"n": "1"}})
    assert first["metadata"]["resourceVersion"] != state["metadata"]["resourceVersion"]
    with pytest.raises(ClusterError) as refused:
        api.replace({**state, "data": {"n": "stale"}})  # the resourceVersion before the first replace
    assert refused.value.status == 409
    current = api.get("v1", "ConfigMap", "wb-state")
    assert current is not None and current["data"] == {"n": "1"}

    assert api.delete("apps/v1", "Deployment", name) is True
    assert api.get("apps/v1", "Service", "nothing-here") is None
    lease = api.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "wb-lock"},
                        "spec": {"holderIdentity": "test", "leaseDurationSeconds": 15}})
    assert lease["spec"]["holderIdentity"] == "test"


def test_colour_objects_against_discovery(cluster: Cluster, api: KubeApi, namespace: str) -> None:
    """Each object the backend applies for a colour is taken at its own group version
    exactly when the server serves it; the unserved ones are taken at the pre-release."""
    served = cluster.served_group_versions()
    for obj in color_objects(namespace):
        what = f"{obj['apiVersion']} {obj['kind']}"
        if obj["apiVersion"] in served:
            api.apply(obj)
            continue
        with pytest.raises(ClusterError) as refused:
            api.apply(obj)
        assert refused.value.status == 404, what
        assert obj["apiVersion"] in PRE_RELEASE, f"{what}: not served and no known pre-release"
        moved = {**obj, "apiVersion": PRE_RELEASE[obj["apiVersion"]]}
        assert moved["apiVersion"] in served, what
        api.apply(moved)
        assert api.get(moved["apiVersion"], obj["kind"], obj["metadata"]["name"]) is not None


def route(namespace: str, hostname: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "wb-watched", "namespace": namespace},
            "spec": {"parentRefs": [{"name": "workbench"}], "hostnames": [hostname]}}


def test_a_watch_from_a_compacted_version_restarts_from_a_fresh_list(api: KubeApi, namespace: str) -> None:
    """resourceVersion 1 of a kind whose watch cache began later (a CRD installed after the
    cluster made its first objects) is answered 410 Gone; the watch lists again and goes
    on from there: first the object as it is now, then its changes."""
    import time

    api.create(route(namespace, "a.example.com"))
    changes = api.watch("gateway.networking.k8s.io/v1", "HTTPRoute", "wb-watched",
                        deadline=time.monotonic() + 20, since="1", slice_seconds=2)
    first = next(changes)
    assert first and first["spec"]["hostnames"] == ["a.example.com"]  # the fresh list, not a slice ending
    api.patch("gateway.networking.k8s.io/v1", "HTTPRoute", "wb-watched", {"spec": {"hostnames": ["b.example.com"]}})
    seen = next(c for c in changes if c)
    assert seen["spec"]["hostnames"] == ["b.example.com"]


def test_an_object_deleted_while_its_history_was_compacted_is_seen_gone(api: KubeApi, namespace: str) -> None:
    """The restart after 410 Gone tells a waiter that the object is gone (a watch from now
    would say nothing until the deadline)."""
    import time

    api.create(route(namespace, "a.example.com"))
    api.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "wb-watched")  # foreground: gone shortly
    wait_until(lambda: api.get("gateway.networking.k8s.io/v1", "HTTPRoute", "wb-watched") is None, 30,
               "the HTTPRoute to be gone")
    started = time.monotonic()
    changes = api.watch("gateway.networking.k8s.io/v1", "HTTPRoute", "wb-watched",
                        deadline=started + 15, since="1", slice_seconds=2)
    assert next(changes) is None
    assert time.monotonic() - started < 5
