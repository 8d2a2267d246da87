"""What schemas do not check: selectors, colours, names, probes, GPUs, route weights, PDBs."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.platforms.kubernetes.manifests.conftest import CASES, render
from workbench.deploy.platforms.kubernetes.manifests import color_objects, stable_service
from workbench.deploy.platforms.kubernetes.options import COLOR_LABEL, KubernetesOptions
from workbench.deploy.platforms.kubernetes.routes import deployment_objects, http_route
from workbench.errors import DeployValueError

Manifest = dict[str, Any]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def kinds(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def matches(sel: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return all(pod_labels.get(k) == v for k, v in sel.items())


def pod_templates(objects: list[Manifest]) -> list[dict[str, str]]:
    return [d["spec"]["template"]["metadata"]["labels"] for d in kinds(objects, "Deployment")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_deployment_selectors_match_their_template_labels(case: str) -> None:
    for deployment in kinds(render(case), "Deployment"):
        sel = deployment["spec"]["selector"]["matchLabels"]
        assert matches(sel, deployment["spec"]["template"]["metadata"]["labels"]), deployment["metadata"]["name"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_selector_picks_the_pods_of_exactly_one_deployment(case: str) -> None:
    objects = render(case)
    templates = pod_templates(objects)
    selectors = [s["spec"]["selector"] for s in kinds(objects, "Service")]
    selectors += [p["spec"]["selector"]["matchLabels"] for p in kinds(objects, "PodDisruptionBudget")]
    for sel in selectors:
        assert sum(matches(sel, t) for t in templates) == 1, sel


@pytest.mark.parametrize("case", sorted(CASES))
def test_stable_service_selects_exactly_the_live_colour(case: str) -> None:
    objects = render(case)
    _, _, weights, _ = CASES[case]
    live = max(weights, key=lambda c: weights[c])
    stable = next(s for s in kinds(objects, "Service") if s["metadata"]["name"] == "web")
    assert stable["spec"]["selector"][COLOR_LABEL] == live
    selected = [t for t in pod_templates(objects) if matches(stable["spec"]["selector"], t)]
    assert [t[COLOR_LABEL] for t in selected] == [live]


def test_stable_service_flips_with_its_colour() -> None:
    blue, green = (stable_service(KubernetesOptions(), "web", c) for c in ("blue", "green"))
    assert blue["spec"]["selector"][COLOR_LABEL] == "blue"
    assert green["spec"]["selector"][COLOR_LABEL] == "green"
    assert blue["metadata"] == green["metadata"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_names_are_dns_labels(case: str) -> None:
    for obj in render(case):
        assert DNS_LABEL.match(obj["metadata"]["name"]) and len(obj["metadata"]["name"]) <= 63
        assert DNS_LABEL.match(obj["metadata"]["namespace"])


@pytest.mark.parametrize("name", ["Web", "web_1", "-web", "web-", "w" * 41, "1web", ""])
def test_invalid_names_are_refused_with_one_sentence(name: str) -> None:
    with pytest.raises(DeployValueError, match="invalid"):
        deployment_objects(KubernetesOptions(), name, "digits", {"blue": "1.0.0"})


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_container_has_readiness_and_liveness_probes(case: str) -> None:
    for deployment in kinds(render(case), "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, container["name"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_serving_pods_are_hardened_and_drain_before_they_are_killed(case: str) -> None:
    opts = CASES[case][0]
    for deployment in kinds(render(case), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] and not ctx["allowPrivilegeEscalation"]
            assert ctx["capabilities"]["drop"] == ["ALL"]
        serve = [c for c in pod["containers"] if c["name"] == "serve"]
        for container in serve:
            args = container["args"]
            drain = int(args[args.index("--graceful-timeout") + 1])
            assert drain == opts.graceful_timeout
            assert pod["terminationGracePeriodSeconds"] > drain + 5  # preStop sleep + drain
            assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
            assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
            ready = "/v2/health/deep" if opts.deep_health else "/v2/health/ready"
            assert container["readinessProbe"]["httpGet"]["path"] == ready
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/models"]["readOnly"] is True
            assert {"/tmp", "/dev/shm"} <= set(mounts)
        if serve:
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes["models"]["persistentVolumeClaim"]["readOnly"] is True
            assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("case", sorted(CASES))
def test_gpu_limits_are_present_iff_asked(case: str) -> None:
    opts = CASES[case][0]
    for deployment in kinds(render(case), "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            limits = container.get("resources", {}).get("limits", {})
            if container["name"] == "serve" and opts.gpus:
                assert limits["nvidia.com/gpu"] == opts.gpus
                assert container["args"][container["args"].index("--device") + 1] == "gpu:0"
            else:
                assert "nvidia.com/gpu" not in limits


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_candidate_runs_preview_replicas_and_hpas_target_their_deployment(case: str) -> None:
    opts, _, weights, _ = CASES[case]
    objects = render(case)
    live = max(weights, key=lambda c: weights[c])
    names = {d["metadata"]["name"]: d for d in kinds(objects, "Deployment")}
    for deployment in kinds(objects, "Deployment"):
        color = deployment["metadata"]["labels"].get(COLOR_LABEL)
        if color:
            expected = opts.replicas if color == live else opts.preview_replicas
            assert deployment["spec"]["replicas"] == expected
    for hpa in kinds(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in names
        assert hpa["spec"]["minReplicas"] == names[target["name"]]["spec"]["replicas"]
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] == opts.hpa_max


@pytest.mark.parametrize("case", sorted(CASES))
def test_route_weights_sum_to_100_and_reference_existing_services(case: str) -> None:
    objects = render(case)
    services = {s["metadata"]["name"]: s for s in kinds(objects, "Service")}
    for route in kinds(objects, "HTTPRoute"):
        rules = route["spec"]["rules"]
        for rule in rules:
            for ref in rule["backendRefs"]:
                assert ref["name"] in services
                assert ref["port"] in [p["port"] for p in services[ref["name"]]["spec"]["ports"]]
        default = rules[-1]
        assert sum(ref["weight"] for ref in default["backendRefs"]) == 100


def test_route_pins_colours_and_versions_like_the_nginx_router() -> None:
    route = http_route(KubernetesOptions(), "web", {"blue": 90, "green": 10},
                       versions={"blue": "1.0.0", "green": "1.1.0"})
    pins = {
        (m["headers"][0]["name"], m["headers"][0]["value"]): rule["backendRefs"][0]["name"]
        for rule in route["spec"]["rules"] for m in rule["matches"] if "headers" in m
    }
    assert pins == {
        ("x-deploy-color", "blue"): "web-blue", ("x-deploy-color", "green"): "web-green",
        ("x-model-version", "1.0.0"): "web-blue", ("x-model-version", "1.1.0"): "web-green",
    }
    same = http_route(KubernetesOptions(), "web", {"blue": 50, "green": 50}, versions={"blue": "1.0.0", "green": "1.0.0"})
    assert not [r for r in same["spec"]["rules"]
                if any(h["name"] == "x-model-version" for m in r["matches"] for h in m.get("headers", []))]


@pytest.mark.parametrize("weights", [{"blue": 90, "green": 20}, {"blue": 101}, {"red": 100}, {}, {"blue": 99.5}])
def test_bad_weights_are_refused(weights: dict[str, Any]) -> None:
    with pytest.raises(DeployValueError):
        http_route(KubernetesOptions(), "web", weights)


def test_the_nginx_router_routes_to_the_colour_services() -> None:
    objects = render("canary_nginx_deep")
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    conf = config["data"]["nginx.conf"]
    assert "server web-blue.default.svc.cluster.local:8000" in conf
    assert "server web-green.default.svc.cluster.local:8000" in conf
    assert "5%" in conf  # the split
    router = next(d for d in kinds(objects, "Deployment") if d["metadata"]["name"] == "web-router")
    service = next(s for s in kinds(objects, "Service") if s["metadata"]["name"] == "web-router")
    assert matches(service["spec"]["selector"], router["spec"]["template"]["metadata"]["labels"])
    # a new table changes the pod template, so the router's pods roll onto it
    other = deployment_objects(CASES["canary_nginx_deep"][0], "web", "digits",
                               {"blue": "1.0.0", "green": "1.1.0"}, {"blue": 75, "green": 25})
    rolled = next(d for d in kinds(other, "Deployment") if d["metadata"]["name"] == "web-router")
    assert rolled["spec"]["template"]["metadata"]["annotations"] != router["spec"]["template"]["metadata"]["annotations"]


def test_a_scaled_down_colour_keeps_its_objects_with_no_pods() -> None:
    deployment, _, hpa, _ = color_objects(KubernetesOptions(), "web", "blue", "digits", "1.0.0", replicas=0)
    assert deployment["spec"]["replicas"] == 0
    assert hpa["spec"]["minReplicas"] == 1  # the API's minimum; an HPA does not scale a Deployment at 0


@pytest.mark.parametrize(("field", "value"), [
    ("namespace", "ML"), ("models_claim", "models_pvc"), ("gpus", -1), ("replicas", 0),
    ("router", "istio"), ("memory_limit", "4 gigs"), ("run_as_user", 0), ("hpa_max", 1),
    ("hostnames", ("Digits.Example.com",)), ("hostnames", ("10.0.0.1:80",)), ("prometheus_url", "prom:9090"),
])
def test_bad_options_are_refused(field: str, value: Any) -> None:
    with pytest.raises(DeployValueError):
        KubernetesOptions(**{field: value})


@pytest.mark.parametrize("router", ["gateway", "service"])
def test_the_argo_rollout_selects_its_pods_and_its_services_select_them_too(router: str) -> None:
    from workbench.deploy.platforms.kubernetes.export import ExportSource
    from workbench.deploy.platforms.kubernetes.export import render as render_export

    opts = KubernetesOptions(router=router, gpus=1)
    objects = render_export(ExportSource.from_versions("web", "digits", "1.0.0", "1.1.0", 25), opts,
                            "argo-rollouts")
    (rollout,) = kinds(objects, "Rollout")
    pod_labels = rollout["spec"]["template"]["metadata"]["labels"]
    assert matches(rollout["spec"]["selector"]["matchLabels"], pod_labels)
    for obj in kinds(objects, "Service"):
        assert matches(obj["spec"]["selector"], pod_labels)
    (budget,) = kinds(objects, "PodDisruptionBudget")
    assert matches(budget["spec"]["selector"]["matchLabels"], pod_labels)
    (container,) = rollout["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "readinessProbe" in container and "livenessProbe" in container and "startupProbe" in container
    services = {s["metadata"]["name"] for s in kinds(objects, "Service")}
    for route in kinds(objects, "HTTPRoute"):
        refs = route["spec"]["rules"][0]["backendRefs"]
        assert {r["name"] for r in refs} == services and sum(r["weight"] for r in refs) == 100


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_pdb_selects_the_pods_of_its_own_colour(case: str) -> None:
    objects = render(case)
    deployments = {d["metadata"]["name"]: d for d in kinds(objects, "Deployment")}
    for budget in kinds(objects, "PodDisruptionBudget"):
        own = deployments[budget["metadata"]["name"]]
        assert matches(budget["spec"]["selector"]["matchLabels"], own["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_ingresses_reference_existing_services_and_the_canary_carries_the_weight(case: str) -> None:
    objects = render(case)
    services = {s["metadata"]["name"]: s for s in kinds(objects, "Service")}
    ingresses = {i["metadata"]["name"]: i for i in kinds(objects, "Ingress")}
    for ingress in ingresses.values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services
                assert backend["port"]["number"] in [p["port"] for p in services[backend["name"]]["spec"]["ports"]]
    if ingresses:
        _, _, weights, stable = CASES[case]
        canary = ingresses["web-canary"]["metadata"]["annotations"]
        candidate = next(c for c in weights if c != stable)
        assert canary["nginx.ingress.kubernetes.io/canary-weight"] == str(weights[candidate])
        assert canary["nginx.ingress.kubernetes.io/canary-by-header-value"] == candidate
        main_backend = ingresses["web"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        assert main_backend == f"web-{stable}"
