"""Anytime-valid sequential tests: verdicts that may be read after every scrape.

A canary's figures are looked at again and again while they accumulate. A fixed-sample
test read that way (a Wilson bound every second) rejects a good candidate far more often
than its nominal level; these tests do not. Each one is a *mixture sequential
probability ratio test* (mSPRT, Johari, Koomen, Pekelis & Walsh, "Always valid
inference", 2017; the test behind Optimizely's Stats Engine and the sequential modes of
Eppo and Statsig): its statistic is the likelihood ratio of "the candidate is worse"
against "it is not", averaged over a mixture of alternatives. Under the null hypothesis
that ratio is a nonnegative supermartingale, so by Ville's inequality it ever reaches
``1 / alpha`` with probability at most ``alpha`` — however often it is looked at and
whenever the look stops. A rollback on it is a rollback at level ``alpha``.

- :class:`ThresholdTest`: the mean of values in ``[0, 1]`` (errors, requests slower than a
  limit, agreeing rows, scores) against a fixed threshold. The mixture is a grid of
  alternatives beyond the threshold, so it is exact for Bernoulli data and, by convexity,
  valid for any bounded score.
- :class:`RateRatioTest`: the candidate's error rate against stable's (at most ``r``
  times it), exact: it judges where the failures came from.
- :class:`DifferenceTest`: the difference of two means (candidate minus stable: mean log
  latency) against a margin, with the Gaussian mixture of Johari et al.
  (asymptotically valid: it assumes the means are roughly normal, as they are after a
  few dozen samples).

Every call returns a :class:`Decision` recording the statistic (the log of the mixture
likelihood ratio), its boundary (``log(1/alpha)``), the estimate and the sample sizes;
the analysis rules store it in their :class:`~workbench.deploy.rollout.analysis.RuleResult`.

:func:`exceeding` and :func:`log_moments` read what these tests need from a cumulative
latency histogram (the serving instances' ``workbench_request_duration_seconds``).

The functions named ``*_log_lr`` take numpy arrays too, so a thousand simulated canaries
run in one call (``tests/deploy/test_sequential.py``, ``bench/bench_sequential.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CERTAIN",
    "DEFAULT_ALPHA",
    "Decision",
    "DifferenceTest",
    "RateRatioTest",
    "ThresholdTest",
    "difference_log_lr",
    "exceeding",
    "log_moments",
    "threshold_log_lr",
]

DEFAULT_ALPHA = 0.01
#: Alternatives of the threshold test, as odds ratios against the threshold's odds:
#: 2^(1/2) … 2^12, equally weighted (from "a little worse" to "nearly always failing").
ODDS_RATIOS = tuple(2.0 ** (k / 2.0) for k in range(1, 25))
#: Weight of one more alternative of the tests against an upper threshold: every value is
#: beyond it (every request fails; every failure is the candidate's). A broken candidate
#: is the commonest bad one, and this weight decides it on two failed requests of two
#: against a 3% maximum (on three failures, all the candidate's, against stable at a 10%
#: share), at the level the error-rate rule tests at (0.01 / 3 rules / 2 tests). The
#: other alternatives share the rest: a graded excess takes log(4/3) = 0.29 more evidence.
CERTAIN = 0.25


@dataclass(frozen=True)
class Decision:
    """One look at a sequential test: whether the evidence reached the boundary, and why."""

    test: str  # what was tested, in words ("rate <= 3%")
    significant: bool  # the statistic reached the boundary: reject the null (the candidate is worse)
    statistic: float  # log of the mixture likelihood ratio
    boundary: float  # log(1/alpha)
    estimate: float | None  # the point estimate (rate, difference) on these samples
    samples: float  # the candidate's samples
    baseline: float | None = None  # the stable colour's samples (two-sample tests)

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "significant": self.significant,
            "statistic": round(self.statistic, 4),
            "boundary": round(self.boundary, 4),
            "estimate": self.estimate,
            "samples": self.samples,
            "baseline": self.baseline,
        }

    def __str__(self) -> str:
        relation = ">=" if self.significant else "<"
        return f"log LR {self.statistic:.2f} {relation} {self.boundary:.2f}"


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")


@cache
def _alternatives(threshold: float) -> np.ndarray:
    import numpy as np  # numpy only where a test is computed: `deploy status` never needs it

    odds = threshold / (1.0 - threshold)
    alt_odds = odds * np.asarray(ODDS_RATIOS)
    alts = np.asarray(alt_odds / (1.0 + alt_odds))
    alts.flags.writeable = False  # shared by every call with this threshold
    return alts


def threshold_log_lr(
    total: Any, trials: Any, threshold: float, *, above: bool = True, certain: float | None = None
) -> Any:
    """log of the mixture likelihood ratio against "mean <= threshold" (``above``) or
    "mean >= threshold" (not ``above``), for ``total`` summed over ``trials`` values in [0, 1].

    The mixture: weight ``certain`` on "every value is 1" (default :data:`CERTAIN` when
    ``above``, none otherwise: the evidence for a pass is not hurried), the rest spread
    evenly over :data:`ODDS_RATIOS`. Each alternative's likelihood ratio is a nonnegative
    supermartingale under the null (for values in [0, 1] too, by convexity), and so is
    any fixed mixture of them. Arrays broadcast; the result has their shape.
    """
    import numpy as np

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"a threshold must be in (0, 1), not {threshold}")
    weight = (CERTAIN if above else 0.0) if certain is None else certain
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"certain must be in [0, 1), not {weight}")
    s = np.asarray(total, dtype=float)
    n = np.asarray(trials, dtype=float)
    if not above:  # "mean >= t" on x is "mean <= 1 - t" on 1 - x
        s, threshold = n - s, 1.0 - threshold
    alts = _alternatives(threshold)
    up = np.log(alts / threshold)
    down = np.log((1.0 - alts) / (1.0 - threshold))
    terms = s[..., None] * up + (n - s)[..., None] * down + math.log((1.0 - weight) / len(alts))
    if weight > 0.0:  # likelihood ratio (1/t)^n while every value is 1, else 0
        sure = np.where(n - s <= 1e-9, s * math.log(1.0 / threshold) + math.log(weight), -np.inf)
        terms = np.concatenate([terms, sure[..., None]], axis=-1)
    peak = terms.max(axis=-1)
    result = peak + np.log(np.exp(terms - peak[..., None]).sum(axis=-1))
    return float(result) if result.ndim == 0 else result


def difference_log_lr(diff: Any, variance: Any, tau: float) -> Any:
    """log of the Gaussian mixture likelihood ratio (Johari et al., eq. 11) of an estimated
    difference ``diff`` (already less the margin) with ``variance``, mixing N(0, tau^2).
    Only a positive ``diff`` counts as evidence: the result is 0 where ``diff <= 0``."""
    import numpy as np

    d = np.asarray(diff, dtype=float)
    v = np.maximum(np.asarray(variance, dtype=float), 1e-300)
    t2 = tau * tau
    value = 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2.0 * v * (v + t2))
    result = np.where(d > 0, np.maximum(value, 0.0), 0.0)
    return float(result) if result.ndim == 0 else result


@dataclass(frozen=True)
class ThresholdTest:
    """Is the mean of values in [0, 1] beyond ``threshold``? (``above``: is it higher —
    an error rate; not ``above``: is it lower — an agreement or a score.)"""

    threshold: float
    alpha: float = DEFAULT_ALPHA
    above: bool = True

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"a threshold must be in (0, 1), not {self.threshold}")

    @property
    def boundary(self) -> float:
        return math.log(1.0 / self.alpha)

    def decide(self, total: float, trials: float) -> Decision:
        """The decision on ``total`` (errors, slow requests, agreeing rows) of ``trials``."""
        trials = max(float(trials), 0.0)
        total = min(max(float(total), 0.0), trials)
        statistic = float(threshold_log_lr(total, trials, self.threshold, above=self.above))
        sign = "<=" if self.above else ">="
        return Decision(
            test=f"mean {sign} {self.threshold:g}",
            significant=statistic >= self.boundary,
            statistic=statistic,
            boundary=self.boundary,
            estimate=total / trials if trials > 0 else None,
            samples=trials,
        )


@dataclass(frozen=True)
class DifferenceTest:
    """Is the candidate's mean more than ``margin`` above stable's? (Gaussian mSPRT.)

    ``tau`` is the spread of the mixture of alternatives: the size of difference the test
    is quickest to find (Johari et al. suggest the scale of the effects one expects).
    """

    margin: float = 0.0
    alpha: float = DEFAULT_ALPHA
    tau: float = 0.25

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)
        if self.tau <= 0:
            raise ValueError(f"tau must be positive, not {self.tau}")

    @property
    def boundary(self) -> float:
        return math.log(1.0 / self.alpha)

    def decide(
        self, candidate: tuple[float, float, float], stable: tuple[float, float, float]
    ) -> Decision:
        """The decision on (samples, mean, variance) of each colour."""
        n_c, mean_c, var_c = candidate
        n_s, mean_s, var_s = stable
        test = f"candidate - stable <= {self.margin:g}"
        if n_c < 2 or n_s < 2:
            return Decision(test, False, 0.0, self.boundary, None, n_c, n_s)
        diff = mean_c - mean_s
        variance = var_c / n_c + var_s / n_s
        statistic = float(difference_log_lr(diff - self.margin, variance, self.tau))
        return Decision(test, statistic >= self.boundary, statistic, self.boundary, diff, n_c, n_s)


@dataclass(frozen=True)
class RateRatioTest:
    """Is the candidate's failure rate more than ``max_ratio`` times stable's?

    An exact test on the failures alone: with a share ``w`` of the requests, a failure
    comes from the candidate with probability at most ``r w / (r w + 1 - w)`` when its rate
    is at most ``r`` times stable's, so the origins of the failures are judged with a
    :class:`ThresholdTest` against that bound (``w`` is read from the request counts, which
    hold it steady within a step). Two clean colours give no failure and no evidence.
    """

    max_ratio: float = 1.0
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)
        if self.max_ratio <= 0:
            raise ValueError(f"max_ratio must be positive, not {self.max_ratio}")

    def decide(self, candidate: tuple[float, float], stable: tuple[float, float]) -> Decision:
        """The decision on (failures, requests) of each colour."""
        (f_c, n_c), (f_s, n_s) = candidate, stable
        test = f"candidate rate <= {self.max_ratio:g} x stable's"
        boundary = math.log(1.0 / self.alpha)
        if n_c <= 0 or n_s <= 0:
            return Decision(test, False, 0.0, boundary, None, n_c, n_s)
        share = n_c / (n_c + n_s)
        bound = self.max_ratio * share / (self.max_ratio * share + 1.0 - share)
        estimate = (f_c / n_c) / (f_s / n_s) if f_s > 0 else (math.inf if f_c > 0 else None)
        if bound >= 1.0 or f_c + f_s <= 0:
            return Decision(test, False, 0.0, boundary, estimate, n_c, n_s)
        statistic = float(threshold_log_lr(f_c, f_c + f_s, bound))
        return Decision(test, statistic >= boundary, statistic, boundary, estimate, n_c, n_s)


# ----------------------------------------------------------------------------- histograms

Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending


def exceeding(buckets: Buckets, limit: float) -> tuple[float, float]:
    """(observations surely above ``limit``, all observations) of a cumulative histogram.

    "Surely": only buckets whose lower bound is at least ``limit`` count, so a limit
    between two bounds is read conservatively (fewer slow requests, never more).
    """
    if not buckets:
        return 0.0, 0.0
    total = buckets[-1][1]
    below = 0.0
    for bound, count in buckets:
        below = count  # the bucket holding the limit counts as not above it
        if bound >= limit * (1 - 1e-9):
            break
    return max(total - below, 0.0), total


def log_moments(buckets: Buckets) -> tuple[float, float, float]:
    """(count, mean, variance) of log latency in a cumulative histogram.

    Each bucket's observations sit at its geometric midpoint, spread log-uniformly across
    it (that spread is added to the variance, so one crowded bucket is not certainty);
    the first bucket starts at half its bound, the +Inf one ends at twice the last bound.
    """
    counts: list[tuple[float, float, float]] = []  # (lower, upper, count)
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        inside = cumulative - below
        if math.isinf(bound):
            low, high = lower, lower * 2.0
        else:
            low, high = (lower if lower > 0 else bound / 2.0), bound
        if inside > 0 and high > 0 and low > 0:
            counts.append((low, high, inside))
        lower, below = (bound if not math.isinf(bound) else lower), cumulative
    n = sum(c for _, _, c in counts)
    if n <= 0:
        return 0.0, 0.0, 0.0
    mids = [(math.log(lo) + math.log(hi)) / 2.0 for lo, hi, _ in counts]
    mean = sum(m * c for m, (_, _, c) in zip(mids, counts, strict=True)) / n
    between = sum(c * (m - mean) ** 2 for m, (_, _, c) in zip(mids, counts, strict=True)) / n
    within = sum(c * math.log(hi / lo) ** 2 / 12.0 for lo, hi, c in counts) / n
    return n, mean, between + within
