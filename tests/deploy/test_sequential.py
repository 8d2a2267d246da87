"""The anytime-valid tests of the canary analysis on simulated request streams (numpy).

A good candidate at the very edge of what is allowed, looked at after every request, is
rolled back in at most ``alpha`` of 1,000 runs; bad ones are found in few requests.
``bench/bench_sequential.py`` prints the same figures as a table.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from workbench.deploy.rollout.sequential import (
    DEFAULT_ALPHA,
    DifferenceTest,
    RateRatioTest,
    ThresholdTest,
    difference_log_lr,
    exceeding,
    log_moments,
    threshold_log_lr,
)

RUNS = 1000
BOUNDARY = math.log(1 / DEFAULT_ALPHA)


def first_rejection(statistic: np.ndarray, per_look: int = 1) -> np.ndarray:
    hit = statistic >= BOUNDARY
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.inf) * per_look


def bernoulli_paths(p: float, requests: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.random((RUNS, requests)) < p, axis=1)


def critical_counts(threshold: float, requests: int, most: int) -> np.ndarray:
    """For each number of trials 1..requests, the fewest hits (of at most ``most``) at which
    the test rejects ``mean <= threshold`` (inf: none). The statistic grows with the hits,
    so a path is rejected exactly when its hits reach this count."""
    counts = np.full(requests, np.inf)
    hits = np.arange(most + 1)[None, :]
    for start in range(0, requests, 500):
        trials = np.arange(start + 1, min(start + 500, requests) + 1)[:, None]
        significant = (threshold_log_lr(np.minimum(hits, trials), trials, threshold) >= BOUNDARY)
        significant &= hits <= trials
        found = significant.any(axis=1)
        counts[start:start + len(trials)][found] = significant.argmax(axis=1)[found]
    return counts


def threshold_first_rejections(p: float, threshold: float, requests: int, seed: int,
                               above: bool = True) -> np.ndarray:
    """Requests to the first rejection of each of RUNS Bernoulli(p) paths, looked at after
    every request (inf: never)."""
    hits = bernoulli_paths(p, requests, seed)
    if not above:  # "mean >= t" on x is "mean <= 1 - t" on 1 - x
        hits = np.arange(1, requests + 1) - hits
        threshold = 1.0 - threshold
    critical = critical_counts(threshold, requests, int(hits.max()))
    return first_rejection(np.where(hits >= critical, np.inf, -np.inf))


@pytest.mark.parametrize(("rate", "seed"), [(0.03, 1), (0.01, 2), (0.001, 3)])
def test_a_good_candidate_at_the_threshold_is_rarely_rolled_back(rate: float, seed: int) -> None:
    first = threshold_first_rejections(rate, rate, 3000, seed)
    assert np.isfinite(first).mean() <= DEFAULT_ALPHA


def test_an_agreement_at_its_minimum_is_rarely_rolled_back() -> None:
    first = threshold_first_rejections(0.8, 0.8, 2000, seed=4, above=False)
    assert np.isfinite(first).mean() <= DEFAULT_ALPHA
    worse = threshold_first_rejections(0.7, 0.8, 2000, seed=5, above=False)
    assert np.isfinite(worse).mean() > 0.99 and np.median(worse) < 300


def test_requests_to_a_verdict_on_bad_candidates() -> None:
    always = threshold_first_rejections(1.0, 0.03, 20, seed=6)
    assert np.all(always <= 3)  # every request failing: rolled back on the 2nd or 3rd
    five = threshold_first_rejections(0.05, 0.03, 6000, seed=7)
    slow = threshold_first_rejections(0.065, 0.01, 2000, seed=8)  # p99 +50%: 6.5% above
    print(f"\nmedian requests to a rollback: 100% errors {np.median(always):.0f}, "
          f"5% errors (max 3%) {np.median(five):.0f}, p99 +50% over its limit "
          f"{np.median(slow):.0f}")
    assert np.isfinite(five).mean() > 0.95 and np.median(five) < 2000
    assert np.isfinite(slow).mean() > 0.99 and np.median(slow) < 200


def test_error_rate_against_stable_a_a_and_a_worse_candidate() -> None:
    rng = np.random.default_rng(9)
    looks, per = 400, 10

    def first(p_c: float, p_s: float) -> np.ndarray:
        f_c = np.cumsum(rng.binomial(per, p_c, (RUNS, looks)), axis=1)
        f_s = np.cumsum(rng.binomial(9 * per, p_s, (RUNS, looks)), axis=1)
        return first_rejection(threshold_log_lr(f_c, f_c + f_s, 0.1), per)

    assert np.isfinite(first(0.01, 0.01)).mean() <= DEFAULT_ALPHA
    worse = first(0.05, 0.01)
    assert np.isfinite(worse).mean() > 0.99 and np.median(worse) < 400
    decision = RateRatioTest().decide((20, 200), (18, 1800))
    assert decision.significant and decision.estimate == pytest.approx(10.0)
    clean = RateRatioTest().decide((0, 100), (0, 900))
    assert not clean.significant and clean.statistic == 0.0


def test_mean_log_latency_against_stable_a_a() -> None:
    rng = np.random.default_rng(10)
    looks, per = 200, 10
    n_c = per * np.arange(1, looks + 1)

    def first(shift: float, margin: float) -> np.ndarray:
        c = rng.normal(shift, 0.5, (RUNS, looks, per))
        s = rng.normal(0.0, 0.5, (RUNS, looks, 9 * per))
        mean_c = np.cumsum(c.sum(axis=2), axis=1) / n_c
        mean_s = np.cumsum(s.sum(axis=2), axis=1) / (9 * n_c)
        var_c = np.cumsum((c**2).sum(axis=2), axis=1) / n_c - mean_c**2
        var_s = np.cumsum((s**2).sum(axis=2), axis=1) / (9 * n_c) - mean_s**2
        variance = var_c / n_c + var_s / (9 * n_c)
        return first_rejection(difference_log_lr(mean_c - mean_s - margin, variance, 0.25), per)

    assert np.isfinite(first(0.0, 0.0)).mean() <= DEFAULT_ALPHA
    slower = first(math.log(1.5), math.log(1.2))
    assert np.isfinite(slower).mean() > 0.99 and np.median(slower) < 200


def test_decisions_record_statistic_boundary_and_samples() -> None:
    test = ThresholdTest(0.03)
    quiet = test.decide(0, 50)
    assert not quiet.significant and quiet.statistic < 0 < quiet.boundary
    broken = test.decide(3, 3)
    assert broken.significant and broken.statistic >= broken.boundary == pytest.approx(BOUNDARY)
    assert broken.to_dict()["samples"] == 3 and broken.to_dict()["estimate"] == 1.0
    assert "log LR" in str(broken)
    assert ThresholdTest(0.03, alpha=0.2).boundary < test.boundary
    with pytest.raises(ValueError, match="alpha"):
        ThresholdTest(0.03, alpha=0.0)
    diff = DifferenceTest(margin=0.1).decide((100, 0.5, 0.04), (900, 0.0, 0.04))
    assert diff.significant and diff.baseline == 900 and diff.estimate == pytest.approx(0.5)
    assert not DifferenceTest().decide((1, 0.5, 0.0), (900, 0.0, 0.04)).significant


def test_histogram_readings() -> None:
    buckets = ((0.1, 50.0), (0.25, 90.0), (0.5, 99.0), (1.0, 100.0), (math.inf, 100.0))
    assert exceeding(buckets, 0.25) == (10.0, 100.0)
    assert exceeding(buckets, 0.3) == (1.0, 100.0)  # between bounds: only surely slower ones
    n, mean, variance = log_moments(buckets)
    assert n == 100 and math.log(0.05) < mean < math.log(0.25) and variance > 0
    one = log_moments(((0.1, 0.0), (0.25, 40.0), (math.inf, 40.0)))
    assert one[2] == pytest.approx(math.log(2.5) ** 2 / 12)  # one crowded bucket: its width
    assert log_moments(()) == (0.0, 0.0, 0.0)


#: The level of each of the error-rate rule's two tests with the default rules (three
#: sequential rules) and a comparison with stable: 0.01 / 3 / 2.
RULE_ALPHA = DEFAULT_ALPHA / 3 / 2


def test_two_failed_requests_of_two_decide_at_the_error_rate_rules_level() -> None:
    test = ThresholdTest(0.03, alpha=RULE_ALPHA)
    assert test.decide(2, 2).significant  # a candidate failing every request
    assert not test.decide(1, 1).significant
    assert not test.decide(2, 3).significant  # one success: the graded alternatives only
    assert test.decide(3, 4).significant


def test_three_failures_all_the_candidates_decide_against_a_clean_stable_at_a_10pct_share() -> None:
    test = RateRatioTest(1.0, alpha=RULE_ALPHA)
    assert test.decide((3, 60), (0, 540)).significant
    assert not test.decide((2, 40), (0, 360)).significant
    assert not test.decide((3, 60), (1, 540)).significant  # one of stable's: not yet
    assert test.decide((5, 60), (1, 540)).significant


@pytest.mark.parametrize(("rate", "seed"), [(0.002, 11), (0.01, 12)])
def test_rare_failures_at_stables_rate_are_rarely_rolled_back(rate: float, seed: int) -> None:
    """A/A with few failures, where the "all the candidate's" alternative weighs most: a
    10% canary with stable's error rate, looked at every 10 candidate requests."""
    rng = np.random.default_rng(seed)
    looks, per = 400, 10
    f_c = np.cumsum(rng.binomial(per, rate, (RUNS, looks)), axis=1)
    f_s = np.cumsum(rng.binomial(9 * per, rate, (RUNS, looks)), axis=1)
    assert np.isfinite(first_rejection(threshold_log_lr(f_c, f_c + f_s, 0.1), per)).mean() \
        <= DEFAULT_ALPHA


def test_the_pass_evidence_has_no_weight_on_every_value_passing() -> None:
    """Evidence for a pass ("mean >= t" on successes) is not hurried: as before, about 60
    clean requests against 3% at the lenient 0.2."""
    within = ThresholdTest(0.03, alpha=0.2, above=False)  # errors: is the rate below 3%?
    assert not within.decide(0, 57).significant and within.decide(0, 58).significant
    assert threshold_log_lr(3, 3, 0.03, certain=0.0) < threshold_log_lr(3, 3, 0.03)


def _histogram(seconds: np.ndarray, bounds: tuple[float, ...]) -> tuple[tuple[float, float], ...]:
    """A cumulative histogram of ``seconds`` at ``bounds`` (and +Inf), as instances export."""
    counts = [float((seconds <= bound).sum()) for bound in bounds]
    return (*zip(bounds, counts, strict=True), (float("inf"), float(len(seconds))))


def test_a_50_percent_slowdown_is_seen_through_the_instances_latency_buckets() -> None:
    """Stable answering in about 63 ms, the candidate in 1.5 times that: both within one
    bucket of the old bounds (0.05..0.1), so their mean log latencies read alike there; the
    instances' buckets must tell them apart, on 200 candidate requests against 1,800."""
    from workbench.serving.metrics import LATENCY_BUCKETS

    rng = np.random.default_rng(3)
    stable = 0.063 * np.exp(rng.normal(0, 0.05, 1800))
    candidate = 1.5 * 0.063 * np.exp(rng.normal(0, 0.05, 200))
    test = DifferenceTest(margin=math.log(1.2), alpha=0.01 / 6)
    seen = test.decide(log_moments(_histogram(candidate, LATENCY_BUCKETS)),
                       log_moments(_histogram(stable, LATENCY_BUCKETS)))
    assert seen.significant, seen
    assert seen.estimate is not None and math.exp(seen.estimate) > 1.3
    assert all(b / a <= 1.67 for a, b in itertools.pairwise(LATENCY_BUCKETS))
    old = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
    blind = test.decide(log_moments(_histogram(candidate, old)),
                        log_moments(_histogram(stable, old)))
    assert not blind.significant  # what the canary could not see before
    # and a candidate as fast as stable is not rejected through the same buckets
    same = 0.063 * np.exp(rng.normal(0, 0.05, 200))
    assert not test.decide(log_moments(_histogram(same, LATENCY_BUCKETS)),
                           log_moments(_histogram(stable, LATENCY_BUCKETS))).significant
