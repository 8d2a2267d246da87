"""Kubernetes: manifests for a workbench deployment (:mod:`.manifests`) and their export (:mod:`.export`).

Rendering is pure (plain dicts, no Kubernetes client). The live side builds on it:
:mod:`.client` (the one door to the API, through the official client, imported lazily),
:mod:`.colour` (what the backend and router apply, from the renderer), :mod:`.readiness`
(is a Deployment ready, and if not, why), :mod:`.store` (deployment state in a
ConfigMap) and :mod:`.reaper` (the delayed scale-down of an old colour); the backend and
router themselves are :mod:`workbench.deploy.platforms.kubernetes.backend` and
:mod:`workbench.deploy.platforms.kubernetes.router`.
"""

from __future__ import annotations
