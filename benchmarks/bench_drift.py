"""Drift check at 100k and 1M rows against a plain NumPy PSI; false alarms and detection.

For each size, in a child process: build a reference and a current frame of that many rows
(22 numeric and 8 categorical features, some with missing values, a few shifted) and predicted
scores, then time (median of `--repeats`, alternating) `check_drift` — PSI, KS / chi-square,
missing rates and score drift, what the drift asset runs — against a plain vectorised NumPy PSI
of the same columns (quantile edges, `searchsorted`, `bincount`). Evidently's HTML report on a
`report_sample_rows` sample is timed apart (its import too). Peak RSS is sampled with psutil.

Then, in this process, on the synthetic consumer-loan data through `build_features`: how many
of `--seeds` undrifted days (about 1,200 applications each, another seed) against a 30,000-row
reference reach warn and retrain (false alarms), and the tier each scenario reaches.
Prints tables and the targets; writes benchmarks/results/drift.json.

    .venv/bin/python benchmarks/bench_drift.py [--sizes 100000 1000000] [--seeds 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingestion import measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "drift.json"
NUMERIC, CATEGORICAL = 22, 8
TARGETS = {"check_s": 30.0, "ratio": 3.0, "peak_rss_gb": 4.0}
START = dt.date(2025, 3, 1)
DAILY, REFERENCE_DAYS = 1_200, 25
SCENARIOS = ("income_shock", "utilization_spike", "missing_bureau_fields")


def numeric_column(rng: np.random.Generator, i: int, n: int, shift: float) -> np.ndarray:
    """One of four shapes (heavy-tailed, normal, discrete, bounded), some with missing values."""
    shape = i % 4
    if shape == 0:
        values = rng.lognormal(10.9 - shift, 0.5, n)
    elif shape == 1:
        values = rng.normal(shift, 1.0, n)
    elif shape == 2:
        values = rng.poisson(1.5 + shift, n).astype(np.float64)
    else:
        values = rng.beta(2.0 + 4 * shift, 3.0, n)
    if i % 3 == 0:
        values[rng.random(n) < 0.05 + (i % 2) * 0.05] = np.nan
    return values


def categorical_column(rng: np.random.Generator, i: int, n: int, shift: float) -> np.ndarray:
    labels = np.array([f"level_{k}" for k in range(3 + i % 6)], dtype=object)
    weights = np.linspace(2.0, 1.0, len(labels)) + shift * np.arange(len(labels))
    values = rng.choice(labels, n, p=weights / weights.sum())
    if i % 2 == 0:
        values[rng.random(n) < 0.02] = None
    return values


def make_frame(n: int, seed: int, drifted: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """Features and scores; when `drifted`, every fifth feature and the scores shift."""
    rng = np.random.default_rng(seed)

    def shift(i: int) -> float:
        return 0.3 if drifted and i % 5 == 0 else 0.0

    columns = {f"num_{i:02d}": numeric_column(rng, i, n, shift(i)) for i in range(NUMERIC)}
    columns |= {f"cat_{i}": categorical_column(rng, i, n, shift(i)) for i in range(CATEGORICAL)}
    scores = rng.beta(2.0 + (0.4 if drifted else 0.0), 14.0, n)
    return pd.DataFrame(columns), scores


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(expected / expected.sum(), 1e-4)
    a = np.maximum(actual / actual.sum(), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def numpy_psi(reference: pd.DataFrame, current: pd.DataFrame, bins: int = 10) -> dict:
    """The baseline: PSI per column, reference deciles (missing bin), or per category."""
    out = {}
    for name in reference.columns:
        ref, cur = reference[name].to_numpy(), current[name].to_numpy()
        if ref.dtype == object:
            ref_codes, categories = pd.factorize(ref)  # missing: -1
            k = len(categories)
            counts = [
                np.bincount(np.where(codes < 0, k, codes), minlength=k + 1)
                for codes in (ref_codes, pd.Index(categories).get_indexer(cur))
            ]
        else:
            edges = np.quantile(ref[~np.isnan(ref)], np.linspace(0, 1, bins + 1)[1:-1])
            counts = [
                np.bincount(
                    np.where(np.isnan(v), bins, np.searchsorted(edges, v, side="right")),
                    minlength=bins + 1,
                )
                for v in (ref, cur)
            ]
        out[name] = psi(counts[0], counts[1])
    return out


class PeakRss:
    """Samples this process's RSS every 20 ms in a thread; `phase()` records each phase's peak."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.current = 0
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.current = max(self.current, self.process.memory_info().rss)

    @contextmanager
    def phase(self, name: str):
        self.current = self.process.memory_info().rss
        yield
        self.current = max(self.current, self.process.memory_info().rss)
        self.peaks[name] = max(self.peaks.get(name, 0.0), self.current / 1e9)

    def stop(self) -> None:
        self._stop.set()


def child_main(size: int, repeats: int) -> None:
    """Child entry point: build the frames, time baseline / check / Evidently; print JSON."""
    from lending_pipeline.ml.drift import check_drift, write_evidently_report
    from lending_pipeline.spec import DriftSpec

    settings = DriftSpec()
    rss = PeakRss()
    with rss.phase("build"):
        reference, ref_scores = make_frame(size, seed=1, drifted=False)
        current, cur_scores = make_frame(size, seed=2, drifted=True)
    times: dict[str, list[float]] = {"numpy_s": [], "check_s": []}
    for _ in range(repeats):
        with rss.phase("numpy"):
            began = time.perf_counter()
            baseline = numpy_psi(reference, current, settings.bins)
            times["numpy_s"].append(time.perf_counter() - began)
        with rss.phase("check"):
            began = time.perf_counter()
            result = check_drift(
                current, reference, settings, current_scores=cur_scores, reference_scores=ref_scores
            )
            times["check_s"].append(time.perf_counter() - began)
    with rss.phase("evidently"):
        began = time.perf_counter()
        import evidently  # noqa: F401

        import_s = time.perf_counter() - began
        began = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            write_evidently_report(
                current,
                reference,
                Path(tmp) / "drift.html",
                sample_size=settings.report_sample_rows,
            )
        evidently_s = time.perf_counter() - began
    rss.stop()
    differences = [abs(result.table.loc[c, "psi"] - baseline[c]) for c in reference.columns]
    print(
        json.dumps(
            {
                "size": size,
                "features": len(reference.columns),
                **{name: statistics.median(values) for name, values in times.items()},
                "runs": times,
                "evidently_import_s": import_s,
                "evidently_sample_s": evidently_s,
                "sample_rows": settings.report_sample_rows,
                "peak_rss_gb": rss.peaks,
                "worst_tier": result.worst_tier,
                "drifted": len(result.drifted),
                "max_psi_difference_vs_numpy": max(differences),
            }
        )
    )


def run_child(size: int, repeats: int) -> dict:
    """One size in a child process (its own memory), with wall time and contention."""
    command = [sys.executable, __file__, "--child", str(size), "--repeats", str(repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        run = measure(command, dict(os.environ), Path(tmp) / "child.log")
    row = json.loads(run["output"][-1])
    row["ratio"] = row["check_s"] / row["numpy_s"]
    row["process_peak_rss_gb"] = run["peak_rss_gb"]
    row["contention"] = run["other_cpu_s"] / (run["wall_s"] * (os.cpu_count() or 1))
    return row


def consumer_features(spec, days: int, seed: int, scenario: str | None = None) -> pd.DataFrame:
    """Synthetic consumer-loan applications through validation typing and `build_features`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lending_pipeline.ml.drift import monitored_columns
    from lending_pipeline.ml.features import build_features
    from lending_pipeline.ml.synth import build_tables
    from lending_pipeline.ml.validation import coerce

    generated = build_tables(START, days, DAILY, seed=seed, scenario=scenario, scenario_start=START)
    tables = {}
    for name, table in generated.tables.items():
        text = pa.table({c: pc.cast(table[c], pa.string()) for c in table.column_names})
        tables[name] = coerce(text.to_pandas(), spec.source_by_name[name])[0]
    return build_features(spec, tables, monitored_columns(spec)[0]).features


def false_alarms_and_detection(seeds: int) -> dict:
    """Tiers reached by undrifted days (other seeds) and by each scenario, vs one reference."""
    from lending_pipeline.ml.drift import check_drift, monitored_columns
    from lending_pipeline.spec import load_spec

    spec = load_spec()
    columns, categorical = monitored_columns(spec)
    reference = consumer_features(spec, REFERENCE_DAYS, seed=1)

    def judge(current: pd.DataFrame):
        return check_drift(current, reference, spec.drift, columns, categorical)

    tiers, max_psi, any_p05 = [], [], 0
    for seed in range(100, 100 + seeds):
        result = judge(consumer_features(spec, 1, seed=seed))
        tiers.append(result.worst_tier)
        max_psi.append(float(result.table["psi"].max()))
        any_p05 += bool((result.table["p_value"] < 0.05).any())
    scenarios = {}
    for scenario in SCENARIOS:
        result = judge(consumer_features(spec, 1, seed=2, scenario=scenario))
        scenarios[scenario] = {"worst_tier": result.worst_tier, "drifted": result.drifted}
    return {
        "reference_rows": len(reference),
        "daily_rows": DAILY,
        "features": len(columns),
        "seeds": seeds,
        "warn_or_worse": sum(t != "ok" for t in tiers),
        "retrain": tiers.count("retrain"),
        "max_psi_median": statistics.median(max_psi),
        "max_psi_max": max(max_psi),
        "days_with_a_test_p_below_0.05": any_p05,
        "scenarios": scenarios,
    }


HEADER = (
    f"{'rows':>9} {'feat':>4} {'numpy s':>7} {'check s':>7} {'ratio':>6} {'check GB':>8} "
    f"{'proc GB':>7} {'ev import s':>11} {'ev sample s':>11} {'others':>6}"
)


def table_line(row: dict) -> str:
    return (
        f"{row['size']:>9,} {row['features']:>4} {row['numpy_s']:>7.2f} {row['check_s']:>7.2f} "
        f"{row['ratio']:>5.2f}x {row['peak_rss_gb']['check']:>8.2f} "
        f"{row['process_peak_rss_gb']:>7.2f} {row['evidently_import_s']:>11.1f} "
        f"{row['evidently_sample_s']:>11.1f} {row['contention']:>6.0%}"
    )


def verdicts(rows: list[dict]) -> dict:
    row = max(rows, key=lambda r: r["size"])
    actual = {
        "check_s": row["check_s"],
        "ratio": row["ratio"],
        "peak_rss_gb": row["process_peak_rss_gb"],
    }
    return {
        name: {"size": row["size"], "actual": actual[name], "target": f"< {limit:g}"}
        | {"pass": actual[name] < limit}
        for name, limit in TARGETS.items()
    }


def report(rows: list[dict], alarms: dict | None) -> dict:
    print(HEADER)
    for row in rows:
        print(table_line(row))
    print(
        "  check: check_drift (PSI, KS/chi-square, missing rates, score drift); numpy: plain PSI;"
        " medians. check GB: peak RSS while checking; proc GB: whole child (frames, Evidently)."
        " ev: Evidently import, and its report on a sample of report_sample_rows a side."
        " others: CPU share other processes used meanwhile."
    )
    judged = verdicts(rows) if rows else {}
    labels = {"check_s": "drift check, s", "ratio": "check / NumPy PSI", "peak_rss_gb": "RSS, GB"}
    for name, verdict in judged.items():
        flag = "PASS" if verdict["pass"] else "FAIL"
        print(
            f"  {flag}  {labels[name]} at {verdict['size']:,}: {verdict['actual']:.2f} "
            f"(target {verdict['target']})"
        )
    if alarms:
        print(
            f"false alarms: {alarms['seeds']} undrifted days of ~{alarms['daily_rows']:,} "
            f"applications vs {alarms['reference_rows']:,} reference rows, "
            f"{alarms['features']} features: warn or worse {alarms['warn_or_worse']}, "
            f"retrain {alarms['retrain']}; largest PSI of a day: median "
            f"{alarms['max_psi_median']:.3f}, max {alarms['max_psi_max']:.3f}; days with some "
            f"test p < 0.05: {alarms['days_with_a_test_p_below_0.05']}"
        )
        for scenario, found in alarms["scenarios"].items():
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(found["drifted"].items())[:4])
            print(f"  {scenario}: {found['worst_tier']} ({top})")
    return judged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=50, help="undrifted days (0: skip)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.repeats)
        return
    rows = []
    for size in args.sizes:
        print(f"benchmarking the drift check at {size:,} rows ...", flush=True)
        rows.append(run_child(size, args.repeats))
    alarms = None
    if args.seeds:
        print(f"false alarms over {args.seeds} undrifted days, and the scenarios ...", flush=True)
        alarms = false_alarms_and_detection(args.seeds)
    judged = report(rows, alarms)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"cores": os.cpu_count(), "rows": rows, "false_alarms": alarms, "targets": judged}
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
