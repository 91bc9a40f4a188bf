"""Bootstrap intervals of the gated metrics: the vectorised resampler against a per-resample loop.

For each size: an out-of-time split with a candidate and a baseline score and two protected
attributes; time (median of `--repeats`, alternating) `bootstrap_intervals` (what the evaluation
runs) against a plain loop that draws each resample's rows and calls the project's metric
functions (ROC-AUC, KS, ECE, Brier skill, adverse impact ratio) on them, for the same number of
resamples. Prints the times, the ratio and the largest difference between the two intervals'
bounds (they differ by resampling noise only: different draws).

    .venv/bin/python benchmarks/bench_bootstrap.py [--sizes 20000 100000] [--resamples 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from lending_pipeline.ml.metrics import (
    adverse_impact_ratio,
    brier_skill_score,
    expected_calibration_error,
    ks_statistic,
)
from lending_pipeline.ml.uncertainty import bootstrap_intervals


def split(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.12).astype(int)
    prob = np.clip(0.08 + 0.25 * y + rng.normal(0, 0.12, n), 0.001, 0.999)
    baseline = np.clip(prob + rng.normal(0, 0.08, n), 0.001, 0.999)
    groups = {"sex": rng.choice(["F", "M"], n), "age_band": rng.choice(list("abcdef"), n)}
    return y, prob, baseline, groups


def looped(y, prob, baseline, groups, cutoff, resamples, level, seed):
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(resamples):
        rows = rng.integers(0, y.size, y.size)
        yy, pp = y[rows], prob[rows]
        auc = roc_auc_score(yy, pp)
        found = {
            "roc_auc": auc,
            "ks": ks_statistic(yy, pp),
            "ece": expected_calibration_error(yy, pp),
            "brier_skill": brier_skill_score(yy, pp),
            "auc_margin_over_baseline": auc - roc_auc_score(yy, baseline[rows]),
            "min_adverse_impact_ratio": min(
                adverse_impact_ratio(pp, cutoff, g[rows])["min_ratio"] for g in groups.values()
            ),
        }
        for name, value in found.items():
            values.setdefault(name, []).append(value)
    tail = (1 - level) / 2 * 100
    return {name: np.percentile(v, [tail, 100 - tail]) for name, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'rows':>8} {'vectorised s':>13} {'loop s':>8} {'ratio':>7} {'max |bound diff|':>17}")
    for n in args.sizes:
        y, prob, baseline, groups = split(n)
        cutoff = float(np.quantile(prob, 0.75))
        fast, slow = [], []
        for _ in range(args.repeats):
            began = time.perf_counter()
            vectorised = bootstrap_intervals(
                y,
                {"candidate": prob, "baseline": baseline},
                prob < cutoff,
                groups,
                resamples=args.resamples,
                seed=1,
            )
            fast.append(time.perf_counter() - began)
            began = time.perf_counter()
            loop = looped(y, prob, baseline, groups, cutoff, args.resamples, 0.9, 1)
            slow.append(time.perf_counter() - began)
        diff = max(
            abs(vectorised[name].low - bounds[0]) + abs(vectorised[name].high - bounds[1])
            for name, bounds in loop.items()
        )
        f, s = statistics.median(fast), statistics.median(slow)
        print(f"{n:>8} {f:>13.2f} {s:>8.2f} {s / f:>6.1f}x {diff:>17.4f}")


if __name__ == "__main__":
    main()
