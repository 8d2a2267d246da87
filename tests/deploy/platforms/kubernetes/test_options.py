"""One options type for the renderer and the live backend: JSON keys, live defaults, and
the host-network and host-directory options as rendered."""

from __future__ import annotations

import pytest

from workbench.deploy.manager import default_router
from workbench.deploy.platforms.kubernetes.manifests import colour_objects
from workbench.deploy.platforms.kubernetes.options import KubernetesOptions
from workbench.errors import DeployValueError


def test_persisted_keys_keep_their_names_and_the_live_defaults() -> None:
    opts = KubernetesOptions.from_mapping({"pvc": "models", "gateway": "public", "gpus": "1",
                                           "ready_timeout": "5", "host_network": "true"})
    assert (opts.models_claim, opts.gateway_name, opts.router) == ("models", "public", "gateway")
    assert (opts.gpus, opts.ready_timeout, opts.host_network) == (1, 5.0, True)
    assert opts.replicas == 1 and opts.hpa_max == 4
    plain = KubernetesOptions.from_mapping({"replicas": "6"})
    assert plain.router == "service" and plain.hpa_max == 6  # no gateway: selector flips only
    assert KubernetesOptions().replicas == 2 and KubernetesOptions().router == "gateway"  # exports


def test_to_mapping_reads_back_to_the_same_options() -> None:
    opts = KubernetesOptions.from_mapping({"gateway": "public", "hostnames": "a.example.com,b.example.com",
                                           "extra_labels": "team=ml", "models_path": "/srv/models",
                                           "host_network": "1", "port": "9000", "scale_down_delay": "0"})
    assert opts.hostnames == ("a.example.com", "b.example.com") and opts.extra_labels == {"team": "ml"}
    assert KubernetesOptions.from_mapping(opts.to_mapping()) == opts


@pytest.mark.parametrize(("options", "message"), [
    ({"colour": "blue"}, r"unknown kubernetes backend option 'colour'; known: .*pvc"),
    ({"host_network": "maybe"}, r"host_network must be true or false, not 'maybe'"),
    ({"replicas": "two"}, r"replicas must be a number, not 'two'"),
    ({"models_path": "models"}, r"the models path must be an absolute directory on the nodes"),
    ({"ready_timeout": "0"}, r"ready_timeout must be a positive number"),
    ({"host_network": "true", "port": "65535"}, r"port \+ 1"),
])
def test_bad_values_are_one_sentence(options: dict[str, str], message: str) -> None:
    with pytest.raises(DeployValueError, match=message):
        KubernetesOptions.from_mapping(options)


def test_host_network_pods_bind_the_node_address_on_a_port_per_colour() -> None:
    opts = KubernetesOptions(host_network=True, port=9100, models_path="/srv/models")
    ports = {}
    for color in ("blue", "green"):
        deployment = colour_objects(opts, "web", color, "digits", "1.0.0", replicas=1)[0]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
        (container,) = pod["containers"]
        (port,) = container["ports"]
        assert port["containerPort"] == port["hostPort"]
        ports[color] = port["containerPort"]
        args = container["args"]
        assert args[args.index("--host") + 1] == "$(POD_IP)"
        assert args[args.index("--port") + 1] == str(port["containerPort"])
        assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        models = next(v for v in pod["volumes"] if v["name"] == "models")
        assert models == {"name": "models", "hostPath": {"path": "/srv/models", "type": "Directory"}}
        mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
        assert mount["readOnly"] is True
    assert ports == {"blue": 9100, "green": 9101}


def test_pod_network_pods_are_unchanged() -> None:
    pod = colour_objects(KubernetesOptions(), "web", "green", "digits", "1.0.0", replicas=1)[0]
    spec = pod["spec"]["template"]["spec"]
    assert "hostNetwork" not in spec and spec["containers"][0]["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert "persistentVolumeClaim" in spec["volumes"][0]


def test_host_network_deployments_route_through_the_workbench_nginx() -> None:
    assert default_router("kubernetes", {"host_network": "true"}) == "process"
    assert default_router("kubernetes", {}) == "kubernetes"
