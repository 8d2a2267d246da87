"""Prometheus' text exposition format, parsed: what a serving instance's ``GET /metrics`` says.

Below both :mod:`~workbench.deploy.client` (which fetches it) and
:mod:`~workbench.deploy.traffic` (which turns it into rates).
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["Samples", "parse_metrics"]

Samples: TypeAlias = "dict[str, list[tuple[dict[str, str], float]]]"


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition as sample name -> [(labels, value), ...].

    Raises ``ValueError`` on text that is not the exposition format.
    """
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples
