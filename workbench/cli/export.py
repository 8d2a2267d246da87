"""``workbench deploy export``: a deployment as Kubernetes manifests (a kustomize directory) for GitOps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from workbench.cli._common import console

if TYPE_CHECKING:
    from workbench.deploy.platforms.kubernetes.capabilities import ApiVersions
    from workbench.deploy.platforms.kubernetes.export import ExportSource


def register(app: typer.Typer) -> None:
    """Add ``export`` to the ``deploy`` group."""
    app.command("export", no_args_is_help=True)(export)


def export(
    name: Annotated[str, typer.Argument(help="Deployment name (also the Kubernetes objects' base name).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory to write (new, empty or a previous export).")
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="k8s, argo-rollouts or kserve.")] = "k8s",
    model: Annotated[
        str | None, typer.Option(help="Export without a local deployment: the model (with --version).")
    ] = None,
    version: Annotated[str | None, typer.Option("--version", help="Stable version (with --model).")] = None,
    candidate: Annotated[str | None, typer.Option(help="Candidate version (with --model).")] = None,
    weight: Annotated[
        int, typer.Option(min=0, max=100, help="Candidate's traffic percent (with --candidate).")
    ] = 0,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    image: Annotated[str, typer.Option(help="The workbench image the pods run.")] = "paddle-workbench:latest",
    pvc: Annotated[
        str, typer.Option(help="PersistentVolumeClaim holding the model repository (mounted read-only).")
    ] = "workbench-models",
    gpus: Annotated[int, typer.Option(help="NVIDIA GPUs per serving pod (0: CPU).")] = 0,
    replicas: Annotated[int, typer.Option(help="Pods of the live colour (HPA minimum).")] = 2,
    preview_replicas: Annotated[int, typer.Option(help="Pods of the other colour.")] = 1,
    max_replicas: Annotated[int, typer.Option(help="HPA maximum per colour.")] = 4,
    router: Annotated[
        str | None, typer.Option(help="gateway (Gateway API HTTPRoute, the default), nginx (the workbench's "
                                      "router), service, or ingress-nginx (legacy canary annotations); "
                                      "not with kserve, which routes itself.")
    ] = None,
    gateway: Annotated[str, typer.Option(help="Gateway the HTTPRoute attaches to.")] = "workbench",
    gateway_namespace: Annotated[str | None, typer.Option(help="The Gateway's namespace.")] = None,
    hostname: Annotated[
        list[str] | None, typer.Option(help="Host name the route answers (repeatable).")
    ] = None,
    deep_health: Annotated[
        bool, typer.Option("--deep-health", help="Readiness runs a real inference (/v2/health/deep).")
    ] = False,
    prometheus: Annotated[
        str, typer.Option(help="Prometheus the Argo Rollouts analysis queries.")
    ] = "http://prometheus.monitoring.svc:9090",
    kube_version: Annotated[
        str | None, typer.Option(help="Write the API versions this Kubernetes release serves (e.g. 1.20: "
                                      "autoscaling/v2beta2, policy/v1beta1), offline.")
    ] = None,
    gateway_api: Annotated[
        str | None, typer.Option(help="The HTTPRoute's version with --kube-version "
                                      "(gateway.networking.k8s.io/v1 or v1beta1).")
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Ask this cluster which API versions it serves (its discovery; "
                                       "nothing is applied).")
    ] = None,
    context: Annotated[str | None, typer.Option(help="The kubeconfig context (with --kubeconfig).")] = None,
) -> None:
    """Write a deployment as Kubernetes manifests: a kustomize directory for Argo CD or Flux.

    From the local deployment NAME (its running versions and weights), or, with --model
    and --version, from the command line alone. Nothing is applied: `kubectl apply -k DIR`.
    A non-empty directory that is not a previous export is refused. The HPA, PDB and
    HTTPRoute are written in the newest API versions unless --kube-version names a release
    or --kubeconfig a cluster to ask (like Helm's .Capabilities.APIVersions).
    """
    from workbench.deploy.platforms.kubernetes.export import FORMATS
    from workbench.deploy.platforms.kubernetes.export import export as write_export
    from workbench.deploy.platforms.kubernetes.options import KubernetesOptions

    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "kserve" and router is not None:
        raise typer.BadParameter(
            "--router does not apply to --format kserve: its InferenceService splits the traffic itself"
        )
    opts = KubernetesOptions(
        namespace=namespace, image=image, models_claim=pvc, gpus=gpus, replicas=replicas,
        preview_replicas=preview_replicas, hpa_max=max_replicas, router=router or "gateway",
        gateway_name=gateway,
        gateway_namespace=gateway_namespace, hostnames=tuple(hostname or ()), deep_health=deep_health,
        prometheus_url=prometheus,
    )
    source = _source(name, model, version, candidate, weight)
    versions = _versions(kube_version, gateway_api, kubeconfig, context)
    files = write_export(source, opts, fmt, out, versions)
    console.print(f"{name}: wrote {len(files)} files to {out} ({fmt}, API versions of {versions.source}); "
                  f"apply with: kubectl apply -k {out}")


def _versions(kube_version: str | None, gateway_api: str | None, kubeconfig: Path | None,
              context: str | None) -> ApiVersions:
    """The API versions to write: a release's, a live cluster's, or the newest."""
    from workbench.deploy.platforms.kubernetes.capabilities import ApiVersions

    if kube_version is not None and (kubeconfig is not None or context is not None):
        raise typer.BadParameter("give --kube-version or --kubeconfig/--context, not both")
    if gateway_api is not None and kube_version is None:
        raise typer.BadParameter("--gateway-api goes with --kube-version (a cluster says its own)")
    if kube_version is not None:
        return ApiVersions.for_release(kube_version, gateway=gateway_api)
    if kubeconfig is None and context is None:
        return ApiVersions()
    from workbench.deploy.platforms.kubernetes.client import KubeApi

    api = KubeApi.connect(context=context, config_file=str(kubeconfig) if kubeconfig else None)
    try:
        return ApiVersions.from_served(api.served_versions(), source=f"the cluster at {api.server}")
    finally:
        api.close()


def _source(name: str, model: str | None, version: str | None, candidate: str | None,
            weight: int) -> ExportSource:
    from workbench.deploy.platforms.kubernetes.export import ExportSource

    if model is not None or version is not None:
        if model is None or version is None:
            raise typer.BadParameter("give --model and --version together")
        if candidate is not None and candidate == version:
            raise typer.BadParameter(f"--candidate {candidate} is the stable --version; give another")
        if weight and candidate is None:
            raise typer.BadParameter("--weight needs a --candidate to send the traffic to")
        return ExportSource.from_versions(name, model, version, candidate, weight)
    if candidate is not None or weight:
        raise typer.BadParameter("--candidate and --weight need --model and --version")
    from workbench.deploy.state import StateStore

    return ExportSource.from_state(StateStore().load(name))
