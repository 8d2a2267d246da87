"""HTTPRoute, Rollout, AnalysisTemplate and InferenceService validated with jsonschema
against their upstream CRD schemas (see ``_crds.py`` for where each schema comes from)."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from tests._components import require
from tests.deploy.platforms.kubernetes.manifests import _crds
from tests.deploy.platforms.kubernetes.manifests.conftest import CASES, render
from workbench.deploy.platforms.kubernetes.export import FORMATS, ExportSource
from workbench.deploy.platforms.kubernetes.export import render as render_export
from workbench.deploy.platforms.kubernetes.options import KubernetesOptions

pytest.importorskip("kubernetes_validate")

SOURCES = {
    "canary": ExportSource.from_versions("web", "digits", "1.0.0", "1.1.0+20260405", 25),
    "stable": ExportSource.from_versions("web", "digits", "1.0.0"),
}
OPTIONS = {
    "gateway-gpu": KubernetesOptions(gpus=1, hostnames=("digits.example.com",), gateway_namespace="infra"),
    "service-deep": KubernetesOptions(router="service", deep_health=True),
}


def crd_objects() -> list[tuple[str, dict[str, Any]]]:
    objects = [(f"{case}/{o['metadata']['name']}", o) for case in sorted(CASES) for o in render(case)]
    for (source_name, source) in SOURCES.items():
        for opts_name, opts in OPTIONS.items():
            for fmt in FORMATS:
                for o in render_export(source, opts, fmt):
                    objects.append((f"{fmt}/{source_name}/{opts_name}/{o['kind']}", o))
    return [(label, o) for label, o in objects if o["kind"] in {k for _, k in _crds.KINDS} | {"InferenceService"}]


def errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.fixture(scope="module")
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    require("npm", _crds.npm_available(), "fetches the pinned CRD schema packages (apt-get install npm)")
    keys = [*_crds.KINDS, ("serving.kserve.io/v1beta1", "InferenceService")]
    return {key: _crds.crd_schema(*key) for key in keys}


def test_every_crd_kind_is_rendered_somewhere() -> None:
    assert {o["kind"] for _, o in crd_objects()} == {"HTTPRoute", "Rollout", "AnalysisTemplate", "InferenceService"}


@pytest.mark.parametrize(("label", "obj"), crd_objects(), ids=[label for label, _ in crd_objects()])
def test_crd_objects_validate_against_the_upstream_schema(
        label: str, obj: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert errors(schemas[(obj["apiVersion"], obj["kind"])], obj) == [], label
    if obj["kind"] == "InferenceService":
        assert errors(_crds.predictor_schema(), obj["spec"]["predictor"]) == [], label


def mutated(kind: str, change: Any) -> dict[str, Any]:
    obj = copy.deepcopy(next(o for _, o in crd_objects() if o["kind"] == kind))
    change(obj)
    return obj


@pytest.mark.parametrize(("kind", "change"), [
    ("HTTPRoute", lambda o: o["spec"]["rules"][-1]["backendRefs"][0].update(weight=-1)),
    ("HTTPRoute", lambda o: o["spec"]["rules"][0]["matches"][0]["headers"][0].update(type="Glob")),
    ("HTTPRoute", lambda o: o["spec"]["rules"][0].update(backendRef=[])),  # misspelt
    ("Rollout", lambda o: o["spec"]["strategy"]["canary"].update(steps=[{"setWeights": 5}])),
    ("Rollout", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicy=3)),
    ("AnalysisTemplate", lambda o: o["spec"]["metrics"][0].pop("name")),
    ("AnalysisTemplate", lambda o: o["spec"]["metrics"][0]["provider"]["prometheus"].update(adress="x")),
])
def test_the_schemas_catch_broken_objects(kind: str, change: Any,
                                          schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    obj = mutated(kind, change)
    assert errors(schemas[(obj["apiVersion"], obj["kind"])], obj)


def test_the_predictor_schema_catches_a_broken_container() -> None:
    obj = mutated("InferenceService", lambda o: o["spec"]["predictor"]["containers"][0].update(readinesProbe={}))
    assert errors(_crds.predictor_schema(), obj["spec"]["predictor"])
    obj = mutated("InferenceService", lambda o: o["spec"]["predictor"].update(canaryTrafficPercent=101))
    assert errors(_crds.predictor_schema(), obj["spec"]["predictor"])
