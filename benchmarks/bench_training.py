"""Training + evaluation at 200k and 1M applications: Dagster + MLflow against a plain script.

For each size: generate and materialize the daily partitions (not timed), then, in child
processes, run (a) the training job through `lending-pipeline train` — training set with its
cross-run guard, candidate fit + calibration, MLflow logging and registration, evaluation of
candidate and scorecard baseline, gates, promotion — and (b) the same `ml/` functions in a plain
script without Dagster or MLflow. Both are measured twice:

- fresh: no MLflow store yet (first run; the store is created and migrated) and no champion;
- warm: the nightly case; the store exists and holds a champion, which the job scores too (the
  plain script scores its candidate a second time in its place: same model size, no registry).

Prints wall time, peak RSS and the overhead ratio (a / b) of each; writes
benchmarks/results/training.json. Children run `sys.executable` with this checkout first on
PYTHONPATH, so a worktree measures its own code.

    .venv/bin/python benchmarks/bench_training.py [--sizes 200000 1000000] [--days 40]
    .venv/bin/python benchmarks/bench_training.py --reuse DIR   # a dir kept by --keep
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingestion import START, child_env, generate, measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "training.json"
TARGET_OVERHEAD = 1.15
CLI = [sys.executable, "-m", "lending_pipeline.cli"]


def as_of(days: int) -> str:
    return (START + dt.timedelta(days=days + 120)).isoformat()


def checkout_env(root: Path) -> dict:
    """A pipeline child's environment, running this checkout's code."""
    env = child_env(root)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def materialize(root: Path, env: dict) -> float:
    began = time.perf_counter()
    measure([*CLI, "materialize", "--workers", "2"], env, root / "materialize.log")
    return time.perf_counter() - began


def run_dagster(root: Path, env: dict, days: int, store: str) -> dict:
    if store == "fresh":
        for folder in ("mlflow", "registry"):
            shutil.rmtree(root / "data" / folder, ignore_errors=True)
    command = [*CLI, "train", "--as-of", as_of(days), "--allow-refusal", "--no-package"]
    result = measure(command, env, root / f"train_{store}.log")
    return {**result, "store": store, "summary": result.pop("output")[-12:]}


def run_plain(root: Path, env: dict, days: int, store: str) -> dict:
    command = [sys.executable, __file__, "--plain", "--days", str(days)]
    command += ["--champion"] if store == "warm" else []
    result = measure(command, env, root / f"plain_{store}.log")
    return {**result, "store": store, "stage_s": json.loads(result.pop("output")[-1])}


def plain_main(days: int, champion: bool) -> None:
    """The training job's work without Dagster or MLflow; prints per-stage seconds as JSON.

    Reads the stored tables as the pipeline's IO manager does (Arrow, then pandas with
    Arrow-backed strings), so both sides start from the same frames.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lending_pipeline.defs.resources import arrow_to_pandas, resolve_data_dir
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

    def table(name: str):
        paths = sorted((resolve_data_dir() / "warehouse" / name).glob("*.parquet"))
        return arrow_to_pandas(pa.concat_tables([pq.read_table(p) for p in paths]))

    spec = load_spec()
    stages: dict[str, float] = {}
    began = time.perf_counter()
    features, outcomes = table("applicant_features"), table("validated_outcomes")
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
    incumbent = None
    if champion:  # warm: the job scores its champion too; a model of the same size stands in
        incumbent = report(spec, test, predict(spec, trained.model, test), trained.cutoff)
    evaluate_gates(spec.gates, candidate, baseline, incumbent)
    stages["evaluation"] = time.perf_counter() - began
    print(json.dumps(stages))


def fastest(pairs: list[tuple[dict, dict]]) -> dict:
    """The fastest run of each side (the least disturbed by other load) and their ratios."""
    dagster = min((d for d, _ in pairs), key=lambda r: r["wall_s"])
    plain = min((p for _, p in pairs), key=lambda r: r["wall_s"])
    return {
        "dagster": dagster,
        "plain": plain,
        "overhead": dagster["wall_s"] / plain["wall_s"],
        "cpu_overhead": dagster["cpu_s"] / plain["cpu_s"],
        "samples_wall_s": [(d["wall_s"], p["wall_s"]) for d, p in pairs],
    }


def bench_size(spec, size: int, days: int, keep: bool, reuse: Path | None, repeat: int = 1) -> dict:
    root = reuse or Path(tempfile.mkdtemp(prefix=f"bench_training_{size}_"))
    try:
        env = checkout_env(root)
        prepare_s = None
        if reuse is None:
            generate(spec, root / "data", size, days)
            prepare_s = materialize(root, env)
        samples: dict[str, list] = {"fresh": [], "warm": []}
        for _ in range(repeat):  # alternating, so both sides see the same background load
            for store in ("fresh", "warm"):
                pair = (run_dagster(root, env, days, store), run_plain(root, env, days, store))
                samples[store].append(pair)
        runs = {store: fastest(pairs) for store, pairs in samples.items()}
        return {"size": size, "days": days, "root": str(root), "materialize_s": prepare_s, **runs}
    finally:
        if not keep and reuse is None:
            shutil.rmtree(root, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--days", type=int, default=40, help="daily partitions per size")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs")
    parser.add_argument(
        "--reuse", type=Path, help="a materialized dir kept by --keep (one size; not regenerated)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs of runs per store; the fastest of each count"
    )
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--champion", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.plain:
        plain_main(args.days, args.champion)
        return
    from lending_pipeline.spec import load_spec

    spec = load_spec()
    if args.reuse and len(args.sizes) != 1:
        sys.exit("--reuse takes the one size it was generated with (--sizes N)")
    rows = [
        bench_size(spec, size, args.days, args.keep, args.reuse, args.repeat) for size in args.sizes
    ]
    print(
        f"{'size':>10} {'store':>6} {'dagster s':>10} {'RSS GB':>7} {'plain s':>8} "
        f"{'plain GB':>9} {'overhead':>9} {'CPU ratio':>9} {'others CPU s':>13}"
    )
    for row in rows:
        for store in ("fresh", "warm"):
            d, p = row[store]["dagster"], row[store]["plain"]
            print(
                f"{row['size']:>10,} {store:>6} {d['wall_s']:>10.1f} {d['peak_rss_gb']:>7.2f} "
                f"{p['wall_s']:>8.1f} {p['peak_rss_gb']:>9.2f} {row[store]['overhead']:>8.2f}x "
                f"{row[store]['cpu_overhead']:>8.2f}x "
                f"{d['other_cpu_s']:>6.0f} /{p['other_cpu_s']:>5.0f}"
            )
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in p["stage_s"].items())
            print(f"{'':>17} plain stages: {stages}")
            walls = ", ".join(f"{d:.1f}/{p:.1f}" for d, p in row[store]["samples_wall_s"])
            print(f"{'':>17} every pair (dagster/plain s): {walls}")
    largest = rows[-1]
    for store in ("warm", "fresh"):
        overhead = largest[store]["overhead"]
        verdict = "PASS" if overhead <= TARGET_OVERHEAD else "FAIL"
        print(
            f"target (at {largest['size']:,}, {store} store): overhead {overhead:.2f} "
            f"<= {TARGET_OVERHEAD}: {verdict}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "target_overhead": TARGET_OVERHEAD}, indent=2))


if __name__ == "__main__":
    main()
