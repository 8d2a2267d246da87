"""Every core manifest validated offline against Kubernetes' own schemas (kubernetes-validate --strict).

kubernetes-validate ships the OpenAPI schemas of each Kubernetes release; ``strict``
also refuses fields a release does not know. No API server is involved.
"""

from __future__ import annotations

import pytest

from tests.deploy.platforms.kubernetes.manifests.conftest import CASES, render

kubernetes_validate = pytest.importorskip("kubernetes_validate")

#: several 1.3x releases: the oldest still commonly run to the newest the package knows
VERSIONS = ("1.30.0", "1.32.0", "1.34.0", "1.36.0")
CRD_KINDS = {"HTTPRoute", "Rollout", "AnalysisTemplate", "InferenceService"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_core_manifests_validate_strictly(case: str, version: str) -> None:
    checked = 0
    for obj in render(case):
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 5


def test_a_misspelt_field_fails_strict_validation() -> None:
    deployment = render("stable_only")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("fmt", ["k8s", "argo-rollouts"])
def test_the_core_objects_of_every_export_validate_strictly(fmt: str, version: str) -> None:
    from workbench.deploy.platforms.kubernetes.export import ExportSource
    from workbench.deploy.platforms.kubernetes.export import render as render_export
    from workbench.deploy.platforms.kubernetes.options import KubernetesOptions

    source = ExportSource.from_versions("web", "digits", "1.0.0", "1.1.0", 25)
    core = [o for o in render_export(source, KubernetesOptions(gpus=1), fmt) if o["kind"] not in CRD_KINDS]
    assert {o["kind"] for o in core} >= {"Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)
