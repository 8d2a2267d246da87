"""Per-segment canary verdicts: a traffic rule judged on each segment of the traffic as well.

A candidate can be fine overall and broken for one tenant: 2% errors in total may be 40%
for the tenant whose inputs hit a bad path. With ``segment_by = "header:x-tenant"`` on
a traffic rule (``error_rate``, ``latency``, ``relative_latency``; or at the top of the
analysis file, for all three), the rule is judged on the whole traffic and on each
segment's traffic apart, read from the instances' per-segment series (``workbench serve
--segment-by``, :mod:`workbench.serving.segments`):

- a segment whose evidence against the candidate is significant fails the rule, and the
  rollback names it (``rule error_rate failed: in segment x-tenant=b, 45.0% of 60
  requests failed …``); its decision records the segment, the test's statistic, boundary
  and sample sizes;
- a segment with too few requests to tell is inconclusive, and does not hold the canary:
  a rare tenant neither fails nor blocks a candidate the rest of the traffic clears. Every
  segment's verdict and sample size are kept in the decision (``segments``);
- the overall verdict stands otherwise, as without segments.

Multiple looks are already paid for by the sequential tests; multiple segments are paid
for with Bonferroni: the rule's level is split in half, one half for the overall test,
the other shared among the ``max_segments + 2`` segments an instance can report (its
distinct values, ``other`` and ``none``) — a fixed number, so the guarantee holds however
many segments show up. Both sources read segments: the scrape from each instance's
``/metrics``, Prometheus with three more queries per look (``sum by (segment_by, segment)``;
no histogram there, so a segment's p99 must hold above the bound as the whole traffic's
does). A source without per-segment series (instances started without ``--segment-by``)
judges the whole traffic only, and says so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from workbench.deploy.rollout.signals import ColorWindow
from workbench.deploy.traffic import BUCKETS, REQUESTS, Counters, quantile
from workbench.errors import DeployValueError
from workbench.serving.segments import DEFAULT_MAX_SEGMENTS, SegmentKey

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from workbench.deploy.rollout.verdicts import Observation, RuleResult

__all__ = [
    "SEGMENT_BUCKETS",
    "SEGMENT_REQUESTS",
    "SegmentCounters",
    "judge_by_segment",
    "judge_output_by_segment",
    "merge_serve_args",
    "segment_alpha",
    "segment_counters",
    "segment_key",
    "segment_windows",
    "serve_args",
    "uncounted",
]

SEGMENT_REQUESTS = "workbench_segment_requests_total"
SEGMENT_BUCKETS = "workbench_segment_request_duration_seconds_bucket"

#: (segment key as text, segment value) -> cumulative counters
SegmentCounters = dict[tuple[str, str], Counters]


def segment_key(text: str | None) -> str | None:
    """A rule's ``segment_by``, checked and normalised (``x-tenant`` -> ``header:x-tenant``)."""
    if text is None:
        return None
    try:
        return str(SegmentKey.parse(str(text)))
    except ValueError as exc:
        raise DeployValueError(f"segment_by: {exc}") from None


def segment_counters(samples: Mapping[str, list[tuple[dict[str, str], float]]],
                     at: float) -> SegmentCounters:
    """One instance's per-segment counters, from its parsed ``/metrics``."""
    grouped: dict[tuple[str, str], dict[str, list[tuple[dict[str, str], float]]]] = {}
    for name, as_name in ((SEGMENT_REQUESTS, REQUESTS), (SEGMENT_BUCKETS, BUCKETS)):
        for labels, value in samples.get(name, []):
            index = (labels.get("segment_by", ""), labels.get("segment", ""))
            grouped.setdefault(index, {}).setdefault(as_name, []).append((labels, value))
    return {index: Counters.from_samples(rows, at) for index, rows in grouped.items()}


def _increase(before: float, after: float) -> float:
    return after - before if after >= before else after


def segment_windows(
    color: str, seconds: float, pairs: Iterable[tuple[SegmentCounters, SegmentCounters]],
) -> dict[str, dict[str, ColorWindow]] | None:
    """Segment key -> segment -> window, summed over instances from each one's (base, last)
    counters; None when no instance reports segments."""
    totals: dict[tuple[str, str], list[Any]] = {}  # requests, errors, buckets
    reported = False
    for base, last in pairs:
        reported = reported or bool(last)
        for index, now in last.items():
            before = base.get(index)
            entry = totals.setdefault(index, [0.0, 0.0, {}])
            entry[0] += _increase(before.requests if before else 0.0, now.requests)
            entry[1] += _increase(before.errors if before else 0.0, now.errors)
            earlier = dict(before.buckets) if before else {}
            for bound, count in now.buckets:
                entry[2][bound] = entry[2].get(bound, 0.0) + _increase(earlier.get(bound, 0.0), count)
    if not reported:
        return None
    windows: dict[str, dict[str, ColorWindow]] = {}
    for (key, segment), (requests, errors, buckets) in totals.items():
        ordered = tuple(sorted(buckets.items()))
        p99 = quantile(ordered, 0.99) if requests > 0 else None
        windows.setdefault(key, {})[segment] = ColorWindow(
            color=color, seconds=seconds, requests=requests, errors=errors,
            p99_ms=None if p99 is None else p99 * 1000.0, memory_bytes=None,
            buckets=ordered or None)
    return windows


def segment_alpha(alpha: float, max_segments: int | None, seen: int = 0) -> float:
    """One segment's share of a segmented rule's level (see the module docstring); more
    segments than the bound (instances that each saw other values) share it too."""
    return alpha / 2 / max((max_segments or DEFAULT_MAX_SEGMENTS) + 2, seen)


def serve_args(rules: Iterable[Any]) -> tuple[str, ...]:
    """The ``workbench serve`` options a candidate needs for ``rules``' segments."""
    segmented = [rule for rule in rules if getattr(rule, "segment_by", None)]
    keys = dict.fromkeys(str(rule.segment_by) for rule in segmented)
    bound = max((getattr(rule, "max_segments", None) or DEFAULT_MAX_SEGMENTS
                 for rule in segmented), default=None)
    args = [part for key in keys for part in ("--segment-by", key)]
    return (*args, "--max-segments", str(bound)) if bound is not None else ()


def _split(args: Iterable[str]) -> tuple[list[str], list[int], list[str]]:
    """``workbench serve`` options as (segment keys, bounds, the other options)."""
    keys: list[str] = []
    bounds: list[int] = []
    rest: list[str] = []
    items = list(args)
    at = 0
    while at < len(items):
        option, value = items[at], items[at + 1] if at + 1 < len(items) else None
        if option == "--segment-by" and value is not None:
            keys.append(str(SegmentKey.parse(value)))
        elif option == "--max-segments" and value is not None:
            bounds.append(int(value))
        else:
            rest.append(option)
            at += 1
            continue
        at += 2
    return keys, bounds, rest


def merge_serve_args(*groups: Iterable[str]) -> tuple[str, ...]:
    """Several option lists as one: every segment key once, the largest bound, the rest kept."""
    keys: dict[str, None] = {}
    bounds: list[int] = []
    rest: list[str] = []
    for group in groups:
        more, bound, other = _split(group)
        keys.update(dict.fromkeys(more))
        bounds += bound
        rest += other
    segmented = [part for key in keys for part in ("--segment-by", key)]
    if keys and bounds:
        segmented += ["--max-segments", str(max(bounds))]
    return (*rest, *segmented)


def uncounted(rules: Iterable[Any], args: Iterable[str]) -> list[tuple[Any, str]]:
    """The rules that compare each segment with stable's same segment (``relative_latency``,
    ``error_rate`` with ``max_ratio``), with their key, that instances started with ``args``
    do not count: stable needs per-segment series for them, or they would compare a
    segment with stable's whole traffic. Agreement per segment replays stable's sample of
    each segment, which only an instance serving with ``--segment-by`` keeps."""
    counted = set(_split(args)[0])
    return [(rule, rule.segment_by) for rule in rules
            if getattr(rule, "segment_by", None) and rule.segment_by not in counted
            and (getattr(rule, "needs_stable", False) or getattr(rule, "max_ratio", None)
                 or getattr(rule, "reads", None) == "output")]


def judge_by_segment(
    rule: Any, seen: Observation, judge: Callable[[Observation], RuleResult],
) -> RuleResult:
    """``judge`` on the whole traffic and, when ``rule.segment_by`` is set, on each segment."""
    key_text: str | None = getattr(rule, "segment_by", None)
    if key_text is None:
        return judge(seen)
    key = SegmentKey.parse(key_text)
    overall = judge(replace(seen, alpha=seen.alpha / 2))
    windows = (seen.candidate.segments or {}).get(str(key))
    if windows is None:
        note = {"segment_by": str(key), "segments": None}
        return replace(overall, decision={**(overall.decision or {}), **note},
                       message=f"{overall.message}; no per-segment figures for {key} "
                               f"(instances not started with --segment-by {key})")
    stable = seen.stable
    stable_segments = (stable.segments or {}).get(str(key)) if stable is not None else None
    alpha = segment_alpha(seen.alpha, getattr(rule, "max_segments", None), len(windows))
    results: dict[str, RuleResult] = {}
    for segment, window in sorted(windows.items()):
        # a segment is compared with the same segment of stable, never with stable's whole
        # traffic (a tenant slow on both colours is no regression); stable without
        # per-segment series leaves a segment its threshold tests only
        versus = stable_segments.get(segment) if stable_segments is not None else None
        results[segment] = judge(replace(seen, candidate=window, stable=versus, alpha=alpha))
    combined = _combined(overall, key, results)
    if "segment" in (combined.decision or {}):  # a segment failed: named
        return combined
    if stable is not None and stable_segments is None and uncounted([rule], ()):
        return replace(combined, message=(
            f"{combined.message}; stable has no per-segment figures for {key}, so no "
            f"segment was compared with stable's (start stable with --segment-by {key})"))
    return combined


def judge_output_by_segment(
    rule: Any, seen: Observation, judge: Callable[[Observation], RuleResult],
) -> RuleResult:
    """``judge`` (a rule on replayed outputs: agreement) on the pooled replay and, when
    ``rule.segment_by`` is set, on the replay of each segment's own sample of stable's
    reservoir (:class:`~workbench.serving.reservoir.SegmentedReservoir`), with the same
    split of the level as the traffic rules."""
    key_text: str | None = getattr(rule, "segment_by", None)
    if key_text is None:
        return judge(seen)
    key = SegmentKey.parse(key_text)
    overall = judge(replace(seen, alpha=seen.alpha / 2))
    check = seen.output
    checks = (check.segments or {}).get(str(key)) if check is not None else None
    if checks is None:
        if check is None or overall.verdict == "skip":
            return overall
        note = {"segment_by": str(key), "segments": None}
        return replace(overall, decision={**(overall.decision or {}), **note},
                       message=f"{overall.message}; no per-segment samples for {key} "
                               f"(stable not serving with --segment-by {key})")
    alpha = segment_alpha(seen.alpha, getattr(rule, "max_segments", None), len(checks))
    results = {segment: judge(replace(seen, output=part, alpha=alpha))
               for segment, part in sorted(checks.items())}
    return _combined(overall, key, results)


def _combined(overall: RuleResult, key: SegmentKey, results: Mapping[str, RuleResult]
              ) -> RuleResult:
    """The overall result, or the worst failing segment's named: a segment's sustained
    fail wins over an overall verdict that is not one, as does any segment's fail over an
    overall verdict that is not a fail. Every segment's verdict goes into the decision."""
    summary = {segment: {"verdict": r.verdict, "samples": r.samples, "value": r.value}
               for segment, r in results.items()}
    failing = sorted(((s, r) for s, r in results.items() if r.verdict == "fail"),
                     key=lambda item: (not item[1].sustained, -item[1].samples))
    worst = failing[0] if failing else None
    overall_failed = overall.verdict == "fail"
    if worst is not None and not overall.sustained and (worst[1].sustained or not overall_failed):
        segment, result = worst
        named = key.describe(segment)
        return replace(
            result, rule=overall.rule, message=f"in segment {named}, {result.message}",
            decision={**(result.decision or {}), "segment": named, "segment_by": str(key),
                      "segments": summary, "overall": {"verdict": overall.verdict,
                                                       "sustained": overall.sustained,
                                                       "samples": overall.samples,
                                                       "value": overall.value}},
        )
    return replace(overall, decision={
        **(overall.decision or {}), "segment_by": str(key), "segments": summary})
