"""KubeApi (the real ``kubernetes`` client) against the in-memory API emulator."""

from __future__ import annotations

import pytest

from tests.deploy.platforms.kubernetes.emulator import Emulator
from workbench.deploy.platforms.kubernetes.client import ClusterError, KubeApi


def _cm(name: str, **data: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_connect_takes_the_context_namespace(api: KubeApi, emulator: Emulator) -> None:
    assert api.namespace == "ml"
    assert api.server == emulator.url


def test_apply_creates_then_merges_and_sends_a_field_manager(api: KubeApi, emulator: Emulator) -> None:
    api.apply(_cm("a", x="1"))
    api.apply(_cm("a", y="2"))
    assert (api.get("v1", "ConfigMap", "a") or {})["data"] == {"x": "1", "y": "2"}
    applies = [c for c in emulator.calls if c.method == "PATCH"]
    assert all(c.content_type == "application/apply-patch+yaml" for c in applies)


def test_replace_with_a_stale_resource_version_is_a_conflict(api: KubeApi) -> None:
    first = api.create(_cm("b", x="1"))
    api.patch("v1", "ConfigMap", "b", {"data": {"x": "2"}})
    with pytest.raises(ClusterError, match="conflict") as info:
        api.replace({**first, "data": {"x": "3"}})
    assert info.value.status == 409


@pytest.mark.parametrize(
    ("status", "words"),
    [(403, "forbidden (nope); the context's user lacks the RBAC permission"),
     (422, "the object is invalid (nope)"),
     (409, "conflict (nope)")],
)
def test_api_errors_are_one_sentence(api: KubeApi, emulator: Emulator, status: int, words: str) -> None:
    emulator.fail("POST", "/configmaps$", status, "nope")
    with pytest.raises(ClusterError) as info:
        api.create(_cm("c"))
    message = str(info.value)
    assert message == f"the Kubernetes API refused to create ConfigMap ml/c: {words}" + (
        "; it was changed by someone else meanwhile, try again" if status == 409 else "")
    assert "\n" not in message


def test_get_of_a_missing_object_is_none_and_delete_false(api: KubeApi) -> None:
    assert api.get("apps/v1", "Deployment", "nothing") is None
    assert api.delete("apps/v1", "Deployment", "nothing") is False


def test_unreachable_api_names_the_server(tmp_path) -> None:
    emu = Emulator().start()
    config = emu.kubeconfig(tmp_path / "kc")
    emu.stop()
    client = KubeApi.connect(config_file=str(config), timeout=2.0)
    with pytest.raises(ClusterError, match="cannot reach the Kubernetes API at http://127.0.0.1"):
        client.get("v1", "ConfigMap", "x")
    client.close()


def test_a_missing_context_is_one_sentence(kubeconfig) -> None:
    with pytest.raises(ClusterError, match="cannot use the kube config"):
        KubeApi.connect(config_file=str(kubeconfig), context="nope")
