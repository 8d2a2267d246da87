"""Kubernetes: manifests for a workbench deployment (:mod:`.manifests`) and their export (:mod:`.export`).

Everything here is pure rendering (plain dicts, no Kubernetes client); the cluster-side
backend builds on it.
"""

from __future__ import annotations
