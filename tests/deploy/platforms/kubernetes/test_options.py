"""One options type for the renderer and the live backend: JSON keys, live defaults, and
the host-network and host-directory options as rendered."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from workbench.deploy.manager import default_router
from workbench.deploy.platforms.kubernetes.manifests import color_objects
from workbench.deploy.platforms.kubernetes.options import KubernetesOptions
from workbench.deploy.platforms.kubernetes.routes import RELOAD_LOOP, router_objects
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
        deployment = color_objects(opts, "web", color, "digits", "1.0.0", replicas=1)[0]
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
    pod = color_objects(KubernetesOptions(), "web", "green", "digits", "1.0.0", replicas=1)[0]
    spec = pod["spec"]["template"]["spec"]
    assert "hostNetwork" not in spec and spec["containers"][0]["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert "persistentVolumeClaim" in spec["volumes"][0]


def test_host_network_deployments_route_through_the_workbench_nginx() -> None:
    assert default_router("kubernetes", {"host_network": "true"}) == "process"
    assert default_router("kubernetes", {}) == "kubernetes"


def test_the_nginx_router_in_the_cluster_routes_host_network_deployments_too() -> None:
    assert default_router("kubernetes", {"host_network": "true", "router": "nginx"}) == "kubernetes"


def test_the_in_cluster_router_reloads_in_place_and_fits_one_node_on_the_host_network() -> None:
    opts = KubernetesOptions(host_network=True, router="nginx", router_port=9300)
    _, deployment, _ = router_objects(opts, "web", {"blue": 95, "green": 5},
                                      versions={"blue": "1.0.0", "green": "1.1.0"})
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pod = spec["template"]["spec"]
    assert pod["hostNetwork"] is True
    for container in pod["containers"]:
        assert container["command"][:3] == ["sh", "-c", RELOAD_LOOP]
    front = next(c for c in pod["containers"] if c["name"] == "front")
    assert front["ports"][0]["containerPort"] == 9300
    pod_network = router_objects(KubernetesOptions(router="nginx"), "web", {"blue": 100},
                                 versions={"blue": "1.0.0"})[1]["spec"]
    assert pod_network["replicas"] == 2 and pod_network["strategy"]["rollingUpdate"]["maxSurge"] == 1


def test_the_reload_loop_reloads_nginx_when_its_configuration_changes(tmp_path: Path) -> None:
    """The loop under a real POSIX sh, with a stand-in ``nginx`` recording its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "nginx"
    master = tmp_path / "master.pid"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                    f'case "$*" in *"-s quit"*) kill "$(cat {master})"; exit 0;; *-s*|*-t*) exit 0;; esac\n'
                    f'echo $$ > {master}; trap "exit 0" TERM; while :; do sleep 0.1; done\n')
    fake.chmod(0o755)
    conf = tmp_path / "nginx.conf"
    conf.write_text("first\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    loop = subprocess.Popen(["sh", "-c", RELOAD_LOOP, "router", str(conf)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        conf.write_text("second\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "-s reload" not in calls.read_text():
            time.sleep(0.1)
    finally:
        loop.terminate()
        out, _ = loop.communicate(timeout=10)
    lines = calls.read_text().splitlines()
    assert lines[0] == f"-p {tmp_path}/ -c {conf}"
    assert f"-p {tmp_path}/ -c {conf} -t -q" in lines and f"-p {tmp_path}/ -c {conf} -s reload" in lines
    assert lines[-1] == f"-p {tmp_path}/ -c {conf} -s quit"  # SIGTERM: a graceful quit
    assert loop.returncode == 0 and f"router: reloaded {conf}" in out
