"""The rendered Kubernetes serving pod runs the real image under its own constraints.

No API server runs here, so the pod's container is run by the private dockerd with what
its spec asks of a container runtime: the image's entrypoint with the rendered ``args``
and ``env``, the user and group of the pod's security context, a read-only root
filesystem, no capabilities, no privilege escalation, the model repository read-only at
its mount path, and each emptyDir as a tmpfs (``/dev/shm`` memory-backed at its size
limit). Then the probes' endpoints, an inference, the preStop command, and a stop within
``terminationGracePeriodSeconds`` that drains and exits 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._wait import wait_until
from tests.docker.conftest import Containers, DockerEngine, free_port
from workbench.deploy.platforms.kubernetes.manifests import color_objects
from workbench.deploy.platforms.kubernetes.options import KubernetesOptions

_SIZES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(quantity: str) -> int:
    for suffix, factor in _SIZES.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def docker_run_args(pod: dict[str, Any], repo: Path) -> tuple[list[str], dict[str, Any]]:
    """What a kubelet would ask of the runtime for the pod's one container (PVC -> ``repo``)."""
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    security = {**pod["securityContext"], **container["securityContext"]}
    binds, tmpfs = {}, {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "persistentVolumeClaim" in volume:
            assert mount.get("readOnly") and volume["persistentVolumeClaim"]["readOnly"]
            binds[str(repo)] = {"bind": mount["mountPath"], "mode": "ro"}
        else:
            empty = volume["emptyDir"]
            size = f",size={_bytes(empty['sizeLimit'])}" if "sizeLimit" in empty else ""
            tmpfs[mount["mountPath"]] = f"rw,nosuid,nodev,mode=1777{size}"
    kwargs: dict[str, Any] = {
        "environment": {e["name"]: e["value"] for e in container["env"]},
        "user": f"{security['runAsUser']}:{security['runAsGroup']}",
        "read_only": security["readOnlyRootFilesystem"],
        "cap_drop": security["capabilities"]["drop"],
        "security_opt": [] if security["allowPrivilegeEscalation"] else ["no-new-privileges"],
        "volumes": binds,
        "tmpfs": tmpfs,
    }
    return container["args"], kwargs


@pytest.mark.timeout(600)
def test_the_rendered_pod_serves_drains_and_exits_cleanly(
        docker_engine: DockerEngine, containers: Containers, served_repo: Path) -> None:
    port = free_port()
    opts = KubernetesOptions(port=port, image=docker_engine.image, graceful_timeout=10, deep_health=True)
    deployment = color_objects(opts, "web", "blue", "digits", "1.0.0", replicas=1)[0]
    pod = deployment["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    args, kwargs = docker_run_args(pod, served_repo)
    container = containers.run(args, **kwargs)
    url = f"http://127.0.0.1:{port}"

    def probe(path: str) -> bool:
        container.reload()
        if container.status == "exited":
            pytest.fail(f"the pod's container exited:\n{container.logs().decode()[-4000:]}")
        return httpx.get(url + path, timeout=10).status_code == 200

    startup = spec["startupProbe"]
    wait_until(lambda: probe(startup["httpGet"]["path"]),
               timeout=startup["periodSeconds"] * startup["failureThreshold"], interval=0.5,
               what="the startup probe", ignore=(httpx.HTTPError,))
    assert probe(spec["readinessProbe"]["httpGet"]["path"])  # deep health: a real inference
    assert probe(spec["livenessProbe"]["httpGet"]["path"])
    body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    response = httpx.post(f"{url}/v2/models/digits/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "1.0.0"

    inspect = docker_engine.client.api.inspect_container(container.id)
    assert inspect["Config"]["User"] == "1000:100" and inspect["HostConfig"]["ReadonlyRootfs"]
    pre_stop = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert container.exec_run(pre_stop).exit_code == 0
    assert container.exec_run(["touch", "/opt/probe"]).exit_code != 0  # the root filesystem is read-only

    container.stop(timeout=pod["terminationGracePeriodSeconds"])
    assert container.wait(timeout=30)["StatusCode"] == 0, container.logs().decode()[-4000:]


@pytest.mark.timeout(600)
def test_the_rendered_router_pod_routes_to_the_colour_services(
        docker_engine: DockerEngine, containers: Containers, demo_repo: Path, tmp_path: Path) -> None:
    """The nginx router's two containers, sharing the ``front`` volume, route by weight and pin.

    The colour Services' cluster DNS names resolve to loopback, where a real ``workbench
    serve`` per colour listens (each on its own port, where a cluster would use one
    Service port).
    """
    from tests.deploy._serve import serving_colors
    from workbench.deploy.platforms.kubernetes.routes import (
        cluster_routing_table,
        router_objects,
        service_host,
    )
    from workbench.deploy.routing import RoutingTable, Upstream

    with serving_colors(demo_repo, tmp_path, {"blue": ["--version", "1.0.0"],
                                               "green": ["--version", "1.1.0"]}) as servers:
        opts = KubernetesOptions(image=docker_engine.image, router="nginx", router_port=free_port())
        base = cluster_routing_table(opts, "web", {"blue": 50, "green": 50}, {"blue": "1.0.0", "green": "1.1.0"})
        table = RoutingTable(**{**base.to_dict(), "upstreams": tuple(
            Upstream(u.color, u.host, servers[u.color].port, u.version) for u in base.upstreams)})
        config, deployment, _ = router_objects(opts, "web", table)
        pod = deployment["spec"]["template"]["spec"]
        conf_dir, front_dir = tmp_path / "config", tmp_path / "front"
        conf_dir.mkdir()
        front_dir.mkdir()
        front_dir.chmod(0o777)  # an emptyDir is writable by the pod's user
        for name, text in config["data"].items():
            (conf_dir / name).write_text(text)
        conf_dir.chmod(0o755)
        hosts = {service_host(opts, "web", c): "127.0.0.1" for c in ("blue", "green")}
        started = {}
        for spec in pod["containers"]:
            binds = {str(conf_dir): {"bind": "/etc/workbench/router", "mode": "ro"},
                     str(front_dir): {"bind": next(m["mountPath"] for m in spec["volumeMounts"]
                                                   if m["name"] == "front"), "mode": "rw"}}
            tmpfs = {m["mountPath"]: "rw,mode=1777" for m in spec["volumeMounts"] if m["name"] == "work"}
            security = {**pod["securityContext"], **spec["securityContext"]}
            started[spec["name"]] = containers.run(  # a Kubernetes command is docker's entrypoint
                spec.get("args"), entrypoint=spec.get("command"), user=f"{security['runAsUser']}:{security['runAsGroup']}",
                read_only=security["readOnlyRootFilesystem"], cap_drop=security["capabilities"]["drop"],
                security_opt=["no-new-privileges"], volumes=binds, tmpfs=tmpfs, extra_hosts=hosts)
        url = f"http://127.0.0.1:{table.listen_port}"
        body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}

        def answers() -> bool:
            for container in started.values():
                container.reload()
                if container.status == "exited":
                    pytest.fail(f"{container.name} exited:\n{container.logs().decode()[-4000:]}")
            return httpx.post(f"{url}/v2/models/digits/infer", json=body, timeout=10).status_code == 200

        wait_until(answers, timeout=60, interval=0.5, what="the router pod", ignore=(httpx.HTTPError,))
        seen = {httpx.post(f"{url}/v2/models/digits/infer", json=body, timeout=10).headers["x-model-version"]
                for _ in range(40)}
        assert seen == {"1.0.0", "1.1.0"}
        for color, version in (("blue", "1.0.0"), ("green", "1.1.0")):
            pinned = httpx.post(f"{url}/v2/models/digits/infer", json=body, timeout=10,
                                headers={"x-deploy-color": color})
            assert pinned.headers["x-model-version"] == version
        front = started["front"]
        pre_stop = next(c for c in pod["containers"] if c["name"] == "front")["lifecycle"]["preStop"]["exec"]
        # the exec may end with the container: nginx quits as soon as its requests are done
        assert b"signal process started" in front.exec_run(pre_stop["command"]).output
        assert front.wait(timeout=30)["StatusCode"] == 0, front.logs().decode()[-4000:]

