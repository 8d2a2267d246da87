"""How quickly the canary's sequential tests reach a verdict, and how rarely a good one is
rolled back, on simulated request streams (numpy, a few seconds).

    uv run --extra cpu --extra notebook --extra dev python bench/bench_sequential.py [--runs 1000]

Each scenario streams requests to a candidate (and, for the comparisons with stable, nine
times as many to stable: a 10% canary) and looks at the test after every request (every
10 requests for the two-sample tests, as a scrape would). Reported: the share of runs
with a rollback (for a good candidate at the edge of what is allowed, this is the false
rollback rate, to be <= alpha), and the median number of candidate requests to it. The
rows marked "rule level" run at the level each of the error-rate rule's two tests gets in a
canary with the default rules and a comparison with stable (alpha / 6); the one against a
clean stable looks after every candidate request.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from workbench.deploy.rollout.sequential import (
    DEFAULT_ALPHA,
    difference_log_lr,
    threshold_log_lr,
)

console = Console(width=120)
Z99 = 2.3263  # the standard normal's 99% quantile
SIGMA = 0.5  # spread of log latency of the simulated versions


def first_rejection(statistic: np.ndarray, alpha: float, per_look: int) -> np.ndarray:
    """Candidate requests to the first look at or beyond the boundary (inf: never)."""
    hit = statistic >= math.log(1.0 / alpha)
    looks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.inf)
    return looks * per_look


def threshold_runs(p: float, threshold: float, *, runs: int, requests: int, alpha: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Bernoulli(p) outcomes judged against ``threshold``, one look per request."""
    out = []
    for start in range(0, runs, 200):
        k = min(200, runs - start)
        hits = np.cumsum(rng.random((k, requests)) < p, axis=1)
        trials = np.arange(1, requests + 1)
        out.append(first_rejection(threshold_log_lr(hits, trials, threshold), alpha, 1))
    return np.concatenate(out)


def error_vs_stable_runs(p_c: float, p_s: float, max_ratio: float, *, runs: int, looks: int,
                         alpha: float, rng: np.random.Generator, per_look: int = 10) -> np.ndarray:
    """Candidate against stable error rates (:class:`RateRatioTest`: where the failures came
    from), a look every 10 candidate requests."""
    f_c = np.cumsum(rng.binomial(per_look, p_c, (runs, looks)), axis=1)
    f_s = np.cumsum(rng.binomial(9 * per_look, p_s, (runs, looks)), axis=1)
    share = 0.1
    bound = max_ratio * share / (max_ratio * share + 1 - share)
    return first_rejection(threshold_log_lr(f_c, f_c + f_s, bound), alpha, per_look)


def log_latency_runs(shift: float, margin: float, *, runs: int, looks: int, alpha: float,
                     rng: np.random.Generator, per_look: int = 10) -> np.ndarray:
    """Mean log latency of candidate (stable's shifted by ``shift``) against stable's."""
    def moments(draws: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = np.cumsum(draws.sum(axis=2), axis=1)
        squares = np.cumsum((draws**2).sum(axis=2), axis=1)
        mean = total / n
        return mean, np.maximum(squares / n - mean**2, 1e-12)

    n_c = per_look * np.arange(1, looks + 1)
    n_s = 9 * n_c
    mean_c, var_c = moments(rng.normal(shift, SIGMA, (runs, looks, per_look)), n_c)
    mean_s, var_s = moments(rng.normal(0.0, SIGMA, (runs, looks, 9 * per_look)), n_s)
    diff = mean_c - mean_s - margin
    return first_rejection(difference_log_lr(diff, var_c / n_c + var_s / n_s, 0.25), alpha,
                           per_look)


def scenarios(runs: int, alpha: float, seed: int = 7) -> list[tuple[str, bool, np.ndarray]]:
    """(scenario, whether the candidate is good, candidate requests to a rollback per run)."""
    rng = np.random.default_rng(seed)
    slow_share = 1.0 - 0.5 * math.erfc(-(Z99 - math.log(1.5) / SIGMA) / math.sqrt(2))
    return [
        ("error rate 3.0%, max 3% (A/A at the edge)", True,
         threshold_runs(0.03, 0.03, runs=runs, requests=3000, alpha=alpha, rng=rng)),
        ("error rate 5%, max 3%", False,
         threshold_runs(0.05, 0.03, runs=runs, requests=6000, alpha=alpha, rng=rng)),
        ("error rate 100%, max 3%", False,
         threshold_runs(1.0, 0.03, runs=runs, requests=50, alpha=alpha, rng=rng)),
        ("p99 at the limit (1% slower than it, A/A)", True,
         threshold_runs(0.01, 0.01, runs=runs, requests=4000, alpha=alpha, rng=rng)),
        (f"p99 +50% over the limit ({slow_share:.1%} slower than it)", False,
         threshold_runs(slow_share, 0.01, runs=runs, requests=2000, alpha=alpha, rng=rng)),
        ("error rate 1% = stable's 1% (A/A, 10% canary)", True,
         error_vs_stable_runs(0.01, 0.01, 1.0, runs=runs, looks=400, alpha=alpha, rng=rng)),
        ("error rate 5% vs stable's 1%", False,
         error_vs_stable_runs(0.05, 0.01, 1.0, runs=runs, looks=400, alpha=alpha, rng=rng)),
        ("latency = stable's (A/A, mean log)", True,
         log_latency_runs(0.0, 0.0, runs=runs, looks=200, alpha=alpha, rng=rng)),
        ("latency +50% vs stable, max +20% (mean log)", False,
         log_latency_runs(math.log(1.5), math.log(1.2), runs=runs, looks=200, alpha=alpha,
                          rng=rng)),
        # at the level each of the error-rate rule's two tests runs at in a canary with the
        # default rules and a comparison with stable (alpha / 3 rules / 2 tests)
        ("rule level: error rate 3.0%, max 3% (A/A)", True,
         threshold_runs(0.03, 0.03, runs=runs, requests=3000, alpha=alpha / 6, rng=rng)),
        ("rule level: error rate 100%, max 3%", False,
         threshold_runs(1.0, 0.03, runs=runs, requests=50, alpha=alpha / 6, rng=rng)),
        ("rule level: error rate 5% vs a clean stable", False,
         error_vs_stable_runs(0.05, 0.0, 1.0, runs=runs, looks=1000, alpha=alpha / 6, rng=rng,
                              per_look=1)),
        ("rule level: error rate 1% = stable's 1% (A/A)", True,
         error_vs_stable_runs(0.01, 0.01, 1.0, runs=runs, looks=400, alpha=alpha / 6, rng=rng)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated canaries per scenario")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    args = parser.parse_args()
    started = time.monotonic()
    table = Table(title=f"sequential tests, alpha {args.alpha:g}, {args.runs} runs each",
                  title_justify="left")
    for column in ("scenario", "rolled back", "median requests to it", "90th percentile"):
        table.add_column(column)
    for name, good, first in scenarios(args.runs, args.alpha):
        share = float(np.isfinite(first).mean())
        finite = first[np.isfinite(first)]
        median = f"{np.median(first):.0f}" if share >= 0.5 else "-"
        p90 = f"{np.quantile(first, 0.9):.0f}" if share >= 0.9 else "-"
        verdict = "false rollbacks" if good else "rollbacks"
        table.add_row(name, f"{share:.1%} ({verdict})", median if finite.size else "-", p90)
    console.print(table)
    console.log(f"done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
