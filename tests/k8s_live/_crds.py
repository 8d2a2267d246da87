"""The CRDs the exports use, as a live API server takes them: ``python -m tests.k8s_live._crds``.

Prints CustomResourceDefinitions (apiextensions.k8s.io/v1, multi-document YAML) for
Gateway API v1 (GatewayClass, Gateway, HTTPRoute), Argo Rollouts v1alpha1 (Rollout,
AnalysisTemplate, AnalysisRun) and KServe v1beta1 (InferenceService), from the same
pinned sources the offline schema tests use
(tests/deploy/platforms/kubernetes/manifests/_crds.py): the npm packages' per-kind
``openAPIV3Schema`` and KServe's upstream CRD file.

The npm packages rewrite the upstream schemas for JSON Schema validators; this module
turns them back into structural CRD schemas: ``oneOf [X, {type: null}]`` becomes ``X``,
``anyOf [integer, string]`` becomes ``x-kubernetes-int-or-string``, ``nullable`` and the
ObjectMeta reference go (metadata is ``type: object``, as in every upstream CRD), and an
object that lists no properties keeps its contents (``x-kubernetes-preserve-unknown-fields``)
instead of having them pruned. ``.ci/k8s-setup.sh`` applies them (server-side apply).
"""

from __future__ import annotations

import sys
import tarfile
from typing import Any

import yaml

from tests.deploy.platforms.kubernetes.manifests import _crds

GATEWAY = "@kubernetes-models/gateway-api"
ARGO = "@kubernetes-models/argo-rollouts"

#: (package, group, version, kind, plural, scope)
KINDS: tuple[tuple[str, str, str, str, str, str], ...] = (
    (GATEWAY, "gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses", "Cluster"),
    (GATEWAY, "gateway.networking.k8s.io", "v1", "Gateway", "gateways", "Namespaced"),
    (GATEWAY, "gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", "Namespaced"),
    (ARGO, "argoproj.io", "v1alpha1", "Rollout", "rollouts", "Namespaced"),
    (ARGO, "argoproj.io", "v1alpha1", "AnalysisTemplate", "analysistemplates", "Namespaced"),
    (ARGO, "argoproj.io", "v1alpha1", "AnalysisRun", "analysisruns", "Namespaced"),
)
NULL = {"type": "null"}
#: the annotation Gateway API v1.0.0's CRDs carry (a *.k8s.io group needs one)
APPROVAL = "https://github.com/kubernetes-sigs/gateway-api/pull/2466"
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def structural(node: Any, junctor: bool = False) -> Any:
    """A kubernetes-models schema node as a structural CRD schema node.

    ``junctor``: the node is a branch of oneOf/anyOf/allOf/not, where a structural schema
    names no types (the node that holds the junctor does).
    """
    if isinstance(node, list):
        return [structural(item, junctor) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: value for key, value in node.items() if key != "nullable"}
    if not node and not junctor:  # an open schema ("any value"), as upstream's unknown-field-preserving nodes
        return {"x-kubernetes-preserve-unknown-fields": True}
    one_of = node.get("oneOf")
    if isinstance(one_of, list) and NULL in one_of:
        rest = [branch for branch in one_of if branch != NULL]
        node.pop("oneOf")
        if len(rest) == 1:
            node = {**node, **rest[0]}
        elif rest:
            node["oneOf"] = rest
        return structural(node)
    if node.get("anyOf") == INT_OR_STRING or node.get("anyOf") == INT_OR_STRING[::-1]:
        node.pop("anyOf")
        node["x-kubernetes-int-or-string"] = True
    out = {key: _structural_value(key, value) for key, value in node.items()}
    if not junctor and "type" not in out and ("properties" in out or "additionalProperties" in out):
        out["type"] = "object"
    if (out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _structural_value(key: str, value: Any) -> Any:
    if key in ("properties", "patternProperties"):  # name -> schema
        return {name: structural(schema) for name, schema in value.items()}
    if key in ("default", "enum", "example", "required"):  # values, not schemas
        return value
    if key in ("oneOf", "anyOf", "allOf", "not"):
        return structural(value, junctor=True)
    return structural(value)


def _schema(package: str, group: str, version: str, kind: str) -> dict[str, Any]:
    member = f"package/{group}/{version}/{kind}.js"
    with tarfile.open(_crds.tarball(package)) as archive:
        handle = archive.extractfile(member)
        assert handle is not None, member
        source = handle.read().decode("utf-8")
    schema: dict[str, Any] = structural(_crds._schema_from_module(source))
    props = schema["properties"]
    props["metadata"] = {"type": "object"}
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    return schema


def crd(package: str, group: str, version: str, kind: str, plural: str, scope: str) -> dict[str, Any]:
    """One CustomResourceDefinition, served and stored at ``version``, with a status subresource."""
    metadata: dict[str, Any] = {"name": f"{plural}.{group}"}
    if group.endswith(".k8s.io"):  # a protected group: upstream's CRDs carry the approval
        metadata["annotations"] = {"api-approved.kubernetes.io": APPROVAL}
    subresources: dict[str, Any] = {"status": {}}
    if kind == "Rollout":  # as upstream: an HPA scales a Rollout through /scale
        subresources["scale"] = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                                 "labelSelectorPath": ".status.selector"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": {
            "group": group,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
            "scope": scope,
            "versions": [{"name": version, "served": True, "storage": True, "subresources": subresources,
                          "schema": {"openAPIV3Schema": _schema(package, group, version, kind)}}],
        },
    }


def crds() -> list[dict[str, Any]]:
    """Every CRD the exports' custom resources need."""
    kserve = yaml.safe_load((_crds.DATA / "kserve" / "serving.kserve.io_inferenceservices.yaml").read_text())
    return [crd(*kind) for kind in KINDS] + [kserve]


if __name__ == "__main__":
    yaml.safe_dump_all(crds(), sys.stdout, sort_keys=False)
