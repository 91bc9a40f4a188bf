"""Training + evaluation at 200k and 1M applications: Dagster + MLflow against a plain script.

For each size: generate and materialize the daily partitions (not timed), then, in child
processes, run (a) the training job through `lending-pipeline train` — training set with its
cross-run guard, candidate fit + calibration, MLflow logging and registration, evaluation of
candidate and scorecard baseline, gates, promotion — and (b) the same `ml/` functions in a plain
loop without Dagster or MLflow. Prints wall time, peak RSS and the overhead ratio (a / b);
writes benchmarks/results/training.json.

    .venv/bin/python benchmarks/bench_training.py [--sizes 200000 1000000] [--days 40]
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingestion import (  # noqa: E402
    BIN,
    START,
    child_env,
    generate,
    measure,
    parse_args,
)

RESULTS = Path(__file__).resolve().parent / "results" / "training.json"
TARGET_OVERHEAD = 1.15


def as_of(days: int) -> str:
    return (START + dt.timedelta(days=days + 120)).isoformat()


def materialize(root: Path, env: dict) -> float:
    began = time.perf_counter()
    measure(
        [str(BIN / "lending-pipeline"), "materialize", "--workers", "2"],
        env,
        root / "materialize.log",
    )
    return time.perf_counter() - began


def run_dagster(root: Path, env: dict, days: int) -> dict:
    command = [str(BIN / "lending-pipeline"), "train", "--as-of", as_of(days)]
    result = measure(command, env, root / "train.log")
    return {**result, "summary": result.pop("output")[-12:]}


def run_plain(root: Path, env: dict, days: int) -> dict:
    command = [str(BIN / "python"), __file__, "--plain", "--days", str(days)]
    result = measure(command, env, root / "plain.log")
    return {**result, "stage_s": json.loads(result.pop("output")[-1])}


def plain_main(days: int) -> None:
    """The training job's work without Dagster or MLflow; prints per-stage seconds as JSON."""
    import pandas as pd

    from lending_pipeline.defs.resources import resolve_data_dir
    from lending_pipeline.ml.evaluate import evaluate_gates, report
    from lending_pipeline.ml.train import (
        SPLIT,
        build_pipeline,
        fit_candidate,
        inputs,
        labelled,
        out_of_time_split,
        predict,
    )
    from lending_pipeline.spec import load_spec

    spec = load_spec()
    warehouse = resolve_data_dir() / "warehouse"
    stages: dict[str, float] = {}
    began = time.perf_counter()
    features = pd.concat(pd.read_parquet(p) for p in sorted(warehouse.glob("applicant_features/*")))
    outcomes = pd.concat(pd.read_parquet(p) for p in sorted(warehouse.glob("validated_outcomes/*")))
    frame = labelled(spec, features, outcomes, dt.date.fromisoformat(as_of(days)))
    split = spec.model.split
    frame = out_of_time_split(
        frame, spec.primary_source.date_column, split.validation_days, split.test_days
    )
    stages["training_set"] = time.perf_counter() - began
    began = time.perf_counter()
    trained = fit_candidate(spec, frame)
    stages["candidate"] = time.perf_counter() - began
    began = time.perf_counter()
    train = frame[frame[SPLIT] == "train"]
    test = frame[frame[SPLIT] == "test"].reset_index(drop=True)
    candidate = report(spec, test, predict(spec, trained.model, test), trained.cutoff)
    baseline_model = build_pipeline(spec, "logistic_scorecard")
    baseline_model.fit(inputs(spec, train), train["target"])
    baseline = report(spec, test, predict(spec, baseline_model, test), trained.cutoff)
    evaluate_gates(spec.gates, candidate, baseline, None)
    stages["evaluation"] = time.perf_counter() - began
    print(json.dumps(stages))


def bench_size(spec, size: int, days: int, keep: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"bench_training_{size}_"))
    try:
        env = child_env(root)
        generate(spec, root / "data", size, days)
        prepare_s = materialize(root, env)
        dagster = run_dagster(root, env, days)
        plain = run_plain(root, env, days)
        return {
            "size": size,
            "days": days,
            "materialize_s": prepare_s,
            "dagster": dagster,
            "plain": plain,
            "overhead": dagster["wall_s"] / plain["wall_s"],
        }
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [200_000, 1_000_000], 40)
    if args.plain:
        plain_main(args.days)
        return
    from lending_pipeline.spec import load_spec

    spec = load_spec()
    rows = [bench_size(spec, size, args.days, args.keep) for size in args.sizes]
    print(
        f"{'size':>10} {'dagster s':>10} {'RSS GB':>7} {'plain s':>8} {'plain GB':>9} "
        f"{'overhead':>9}"
    )
    for row in rows:
        d, p = row["dagster"], row["plain"]
        print(
            f"{row['size']:>10,} {d['wall_s']:>10.1f} {d['peak_rss_gb']:>7.2f} "
            f"{p['wall_s']:>8.1f} {p['peak_rss_gb']:>9.2f} {row['overhead']:>8.2f}x"
        )
        print(
            f"{'':>10} plain stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in p["stage_s"].items())
        )
    largest = rows[-1]
    verdict = "PASS" if largest["overhead"] <= TARGET_OVERHEAD else "FAIL"
    print(
        f"target (at {largest['size']:,}): overhead {largest['overhead']:.2f} "
        f"<= {TARGET_OVERHEAD}: {verdict}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "target_overhead": TARGET_OVERHEAD}, indent=2))


if __name__ == "__main__":
    main()
