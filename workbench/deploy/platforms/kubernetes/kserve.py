"""A KServe ``InferenceService`` (serving.kserve.io/v1beta1): the workbench image as a custom container.

The workbench server already speaks the Open Inference Protocol (KServe v2 REST), so
KServe's clients and its ingress work unchanged. The predictor is the same hardened
``workbench serve`` container as the plain Kubernetes export, less what Knative does
itself (startup probe, preStop) and with its one port named ``http1``. The model
repository comes from the PVC through KServe's storage initializer
(``STORAGE_URI=pvc://<claim>/``, mounted read-only at ``/mnt/models``).

A candidate is a new revision of the same InferenceService: the predictor serves the
candidate's version and ``canaryTrafficPercent`` gives it its share; KServe keeps the
previous revision (the stable version) for the rest. Promote: drop the percentage;
roll back: set it to 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.deploy.platforms.kubernetes.manifests import (
    Manifest,
    labels,
    metadata,
    serve_container,
    version_annotations,
)
from workbench.errors import DeployValueError

if TYPE_CHECKING:
    from workbench.deploy.platforms.kubernetes.options import KubernetesOptions

__all__ = ["KSERVE_MODELS", "inference_service"]

KSERVE_MODELS = "/mnt/models"  # where KServe mounts the storage URI


def inference_service(opts: KubernetesOptions, name: str, model: str, version: str, *,
                      canary_percent: int | None = None) -> Manifest:
    """The InferenceService ``<name>`` serving ``version`` (the candidate when ``canary_percent`` is set)."""
    container = serve_container(opts, name, "blue", model, version, container_name="kserve-container",
                                startup_probe=False, probe_port=opts.port)
    args = container["args"]
    args[args.index("--repo") + 1] = KSERVE_MODELS
    container.pop("lifecycle")  # Knative drains the revision itself
    container["ports"] = [{"name": "http1", "containerPort": opts.port, "protocol": "TCP"}]
    container["env"] = [
        {"name": "STORAGE_URI", "value": f"pvc://{opts.models_claim}/"},
        *({**e, "value": KSERVE_MODELS} if e["name"] == "WORKBENCH_REPO" else e for e in container["env"]),
    ]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "models"]
    volumes = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm_size}},
    ]
    predictor: Manifest = {
        "minReplicas": opts.replicas,
        "maxReplicas": opts.hpa_max,
        "scaleMetric": "cpu",
        "scaleTarget": opts.hpa_cpu_percent,
        "containers": [container],
        "volumes": volumes,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": opts.run_as_user,
            "runAsGroup": opts.run_as_group,
            "fsGroup": opts.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": opts.termination_grace,
    }
    if opts.service_account:
        predictor["serviceAccountName"] = opts.service_account
    if canary_percent is not None:
        if isinstance(canary_percent, bool) or not 0 <= canary_percent <= 100:
            raise DeployValueError(f"canary traffic percent must be in 0..100, not {canary_percent!r}")
        predictor["canaryTrafficPercent"] = canary_percent
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(opts, name, labels(name, None, extra=opts.extra_labels),
                             {**version_annotations(model, version),
                              "serving.kserve.io/enable-prometheus-scraping": "true"}),
        "spec": {"predictor": predictor},
    }
