"""The ``workbench serve`` options ``deploy create`` and ``deploy update`` give a deployment's
instances: per-segment counting (``--segment-by``, any colour) and chaos-testing faults
(``--fault-error-rate`` …, the candidate's only), read from the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from workbench.deploy.rollout.phases import CHECKS

if TYPE_CHECKING:
    from workbench.deploy.rollout.analysis import AnalysisSpec
    from workbench.serving.faults import FaultConfig

__all__ = ["MaxSegmentsOption", "SegmentByOption", "checks", "faults", "segment_args", "serve_args"]

SegmentByOption = Annotated[
    list[str] | None,
    typer.Option(help="Count requests per traffic segment too, read from a header "
                 "(header:x-tenant) or a request parameter (param:tenant), so that a canary "
                 "can judge its rules per segment against this colour; repeatable."),
]
MaxSegmentsOption = Annotated[
    int | None,
    typer.Option(help="Distinct segment values counted apart per key (later ones pooled as "
                 "'other') [default: 16].", show_default=False),
]


def segment_args(segment_by: list[str] | None, max_segments: int | None) -> tuple[str, ...]:
    """``--segment-by KEY … --max-segments N`` for the instances; a bad key is one sentence."""
    from workbench.deploy.rollout.segments import segment_key
    from workbench.errors import DeployValueError

    if not segment_by:
        if max_segments is not None:
            raise DeployValueError("--max-segments bounds --segment-by: give --segment-by too")
        return ()
    if max_segments is not None and max_segments < 1:
        raise DeployValueError(f"--max-segments must be at least 1, not {max_segments}")
    keys = dict.fromkeys(str(segment_key(key)) for key in segment_by)
    bound = () if max_segments is None else ("--max-segments", str(max_segments))
    return (*(part for key in keys for part in ("--segment-by", key)), *bound)


def faults(error_rate: float, latency_ms: float, segment: str | None = None,
           ) -> FaultConfig | None:
    """The candidate's chaos-testing faults, or None; out of range is one sentence."""
    if error_rate == 0 and latency_ms == 0:
        if segment is not None:
            from workbench.errors import DeployValueError

            raise DeployValueError("--fault-segment limits faults: give --fault-error-rate "
                                   "or --fault-latency-ms too")
        return None  # the serving layer (and numpy) stays unimported
    from workbench.errors import DeployValueError
    from workbench.serving.faults import FaultConfig

    if not 0.0 <= error_rate <= 1.0:
        raise DeployValueError(f"--fault-error-rate must be in 0..1, not {error_rate:g}")
    if not 0.0 <= latency_ms <= 600_000:
        raise DeployValueError(f"--fault-latency-ms must be in 0..600000, not {latency_ms:g}")
    try:
        return FaultConfig(error_rate, latency_ms, segment=segment)
    except ValueError as exc:
        raise DeployValueError(f"--fault-segment: {exc}") from None


def serve_args(spec: AnalysisSpec | None, given: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The candidate's serve options: ``given`` and those the analysis needs (per-segment
    metrics)."""
    if spec is None:
        return given
    from workbench.deploy import canary_serve_args
    from workbench.deploy.rollout.segments import merge_serve_args

    return merge_serve_args(given, canary_serve_args(spec))


def checks(faults: FaultConfig | None) -> tuple[str, ...]:
    """Verification's checks: without the agreement check when the candidate fails on
    purpose (its inference answers meet the faults; readiness and deep health do not)."""
    return tuple(c for c in CHECKS if faults is None or c != "agreement")
