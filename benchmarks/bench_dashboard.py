"""What the drift dashboard adds to a `drift_report` day, against the drift check it sits beside.

On synthetic consumer-loan applications through `build_features`: a reference of `--days` days
(about 1,200 applications a day, the champion's training range) and one current day with scores.
Times (median of `--repeats`, alternating) `check_drift` — what the tiers need — and the day's
Evidently snapshot (`day_snapshot`) plus storing it (`publish`) in a fresh local workspace; the
Evidently import is timed apart (paid once per run process). Prints the ratio snapshot / check.

    .venv/bin/python benchmarks/bench_dashboard.py [--days 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_drift import consumer_features  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from lending_pipeline.ml.dashboard import day_snapshot, publish, served_decisions
    from lending_pipeline.ml.drift import check_drift, monitored_columns
    from lending_pipeline.spec import load_spec

    spec = load_spec()
    reference = consumer_features(spec, args.days, seed=1)
    current = consumer_features(spec, 1, seed=2, scenario="utilization_spike")
    rng = np.random.default_rng(0)
    ref_scores, cur_scores = rng.beta(2, 12, len(reference)), rng.beta(3, 10, len(current))
    served = served_decisions(
        [{"decision": "decline", "reason_codes": ["RU01", "DI01"]}] * 300
        + [{"decision": "approve", "reason_codes": []}] * 900
    )
    columns, categorical = monitored_columns(spec)

    began = time.perf_counter()
    import evidently  # noqa: F401

    import_s = time.perf_counter() - began
    checks, snapshots = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            began = time.perf_counter()
            check_drift(
                current, reference, spec.drift, columns, categorical, cur_scores, ref_scores
            )
            checks.append(time.perf_counter() - began)
            began = time.perf_counter()
            snapshot = day_snapshot(
                spec, "2025-03-01", current, reference, cur_scores, ref_scores, served
            )
            publish(Path(tmp), spec, "2025-03-01", snapshot)
            snapshots.append(time.perf_counter() - began)
    check_s, snapshot_s = statistics.median(checks), statistics.median(snapshots)
    print(f"reference {len(reference):,} rows, current {len(current):,}, {len(columns)} features")
    print(f"evidently import      {import_s:6.2f} s (once per process)")
    print(f"check_drift           {check_s:6.2f} s")
    print(f"snapshot + publish    {snapshot_s:6.2f} s  ({snapshot_s / check_s:.2f}x check_drift)")


if __name__ == "__main__":
    main()
