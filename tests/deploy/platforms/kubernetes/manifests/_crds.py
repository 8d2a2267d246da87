"""Upstream CRD schemas for offline validation: HTTPRoute, Rollout, AnalysisTemplate, InferenceService.

Gateway API and Argo Rollouts: the npm packages ``@kubernetes-models/gateway-api`` and
``@kubernetes-models/argo-rollouts`` carry, per kind, the ``openAPIV3Schema`` of the
upstream CRD release they were generated from (their package.json names it: Gateway
API v1.0.0 ``standard-install.yaml``/``experimental-install.yaml``, Argo Rollouts
v1.5.0 ``install.yaml``), as a JSON object in ``<group>/<version>/<Kind>.js``. The
tarball is fetched once with ``npm pack`` at a pinned version, checked against its
pinned sha512 and cached under ``$XDG_CACHE_HOME/paddle-workbench-tests/npm``.

KServe has no such package; its upstream CRD (``config/crd/minimal``) is stored under
tests/data/crds/ (see the README there). That CRD keeps ``spec`` open
(``x-kubernetes-preserve-unknown-fields``), so the predictor, which KServe defines as a
Kubernetes PodSpec plus its own component fields, is also validated against the
PodSpec schema of kubernetes-validate.

The API server prunes unknown fields and ``kubectl --validate=strict`` refuses them;
:func:`strict` gives the same effect here by closing every object schema that lists
its properties (objects the CRD leaves open stay open).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).parents[4] / "data" / "crds"

#: package -> (version, sha512 integrity as npm publishes it)
PACKAGES: dict[str, tuple[str, str]] = {
    "@kubernetes-models/gateway-api": (
        "0.5.1", "sha512-VsB6ipjcLCvOPmAbqxiK9dEEwD/yYGs5lkBTRFG2EcVGFy4o+JMWrTHuAXvaLtycGG67/qWJhHW8MtUhKJLdBg=="),
    "@kubernetes-models/argo-rollouts": (
        "0.3.2", "sha512-TrWd0ap1iwcsLLm+7a0fvtRxnZmlHEd0w57GhFfJXPmik5HSu9525cEM3q/oumEpetbAXb6fHnwA3C0ANs+TJA=="),
}
#: (apiVersion, kind) -> (package, file inside it)
KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): (
        "@kubernetes-models/gateway-api", "gateway.networking.k8s.io/v1/HTTPRoute.js"),
    ("argoproj.io/v1alpha1", "Rollout"): ("@kubernetes-models/argo-rollouts", "argoproj.io/v1alpha1/Rollout.js"),
    ("argoproj.io/v1alpha1", "AnalysisTemplate"): (
        "@kubernetes-models/argo-rollouts", "argoproj.io/v1alpha1/AnalysisTemplate.js"),
}
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
K8S_VERSION = "1.33.0"  # the core definitions (ObjectMeta, PodSpec) the CRD schemas refer to


def npm_available() -> bool:
    return shutil.which("npm") is not None


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "paddle-workbench-tests" / "npm"


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def tarball(package: str) -> Path:
    """The package's pinned tarball, fetched with ``npm pack`` on first use and checked."""
    version, integrity = PACKAGES[package]
    target = cache_dir() / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not target.exists() or _integrity(target) != integrity:
        target.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["npm", "pack", f"{package}@{version}", "--pack-destination", str(target.parent), "--silent"],
            capture_output=True, text=True, timeout=300, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"npm pack {package}@{version} failed: {proc.stderr.strip()}")
    actual = _integrity(target)
    if actual != integrity:
        target.unlink()
        raise RuntimeError(f"{target.name}: integrity {actual} is not the pinned {integrity}")
    return target


def _schema_from_module(source: str) -> dict[str, Any]:
    """The JSON schema object a generated model module holds (``const schema = {...};``)."""
    start = source.index("const schema = ") + len("const schema = ")
    end = source.index("\n};\n", start) + 2
    schema: dict[str, Any] = json.loads(source[start:end])
    return schema


@cache
def core_definitions() -> dict[str, Any]:
    """kubernetes-validate's strict definitions of one release (ObjectMeta, PodSpec, ...)."""
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    defs: dict[str, Any] = json.loads((root / f"v{K8S_VERSION}-local-strict" / "_definitions.json").read_text())
    return dict(defs["$defs"])


def strict(schema: Any) -> Any:
    """``schema`` with every object that lists its properties closed to other properties."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (out.get("properties") and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _with_core(schema: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(schema).replace(f'"{OBJECT_META}#"', f'"#/$defs/{OBJECT_META}"')
    return {**json.loads(text), "$defs": core_definitions()}


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The upstream schema of a CRD kind, closed (:func:`strict`), core references resolved."""
    if (api_version, kind) == ("serving.kserve.io/v1beta1", "InferenceService"):
        crd = yaml.safe_load((DATA / "kserve" / "serving.kserve.io_inferenceservices.yaml").read_text())
        (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
        return _with_core(strict(served["schema"]["openAPIV3Schema"]))
    package, member = KINDS[(api_version, kind)]
    with tarfile.open(tarball(package)) as archive:
        handle = archive.extractfile(f"package/{member}")
        assert handle is not None
        source = handle.read().decode("utf-8")
    return _with_core(strict(_schema_from_module(source)))


#: KServe's component fields beside the PodSpec of a predictor (v1beta1 ComponentExtensionSpec)
KSERVE_EXTENSION = {
    "minReplicas": {"type": "integer", "minimum": 0},
    "maxReplicas": {"type": "integer", "minimum": 0},
    "scaleTarget": {"type": "integer", "minimum": 1},
    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
    "containerConcurrency": {"type": "integer", "minimum": 0},
    "timeout": {"type": "integer", "minimum": 0},
}


def predictor_schema() -> dict[str, Any]:
    """A KServe predictor: the core PodSpec (strict) plus KServe's component fields."""
    defs = core_definitions()
    pod = dict(defs["io.k8s.api.core.v1.PodSpec"])
    pod["properties"] = {**pod["properties"], **KSERVE_EXTENSION}
    pod["required"] = [r for r in pod.get("required", []) if r != "containers"] + ["containers"]
    return {**pod, "$defs": defs}
