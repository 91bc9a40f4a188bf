"""Training + evaluation at 200k and 1M applications: Dagster + MLflow against a plain script.

For each size: generate and materialize the daily partitions (not timed), then, in child
processes, run (a) the training job through `lending-pipeline train` — training set with its
cross-run guard, candidate fit + calibration, MLflow logging and registration, evaluation of
candidate and scorecard baseline, gates, promotion — and (b) the same `ml/` functions in a plain
script without Dagster or MLflow. Both are measured twice:

- fresh: no MLflow store yet (first run; the store is created and migrated) and no champion;
- warm: the nightly case; the store exists and holds a champion, which the job scores too (the
  plain script scores its candidate a second time in its place: same model size, no registry).

Prints wall time, peak RSS and the overhead ratio (a / b) of each, and (c) what MLflow's own
work in the job costs, measured alone in one more child: importing MLflow and skops, opening the
store, the run's details, logging the champion model (skops, signature, input example) and
loading it; writes
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
import statistics
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
# What a warm training run asks of MLflow (measured alone by `mlflow_costs_main`).
WARM_RUN_MLFLOW = (
    "import_mlflow_skops",
    "open_store",
    "run_details",
    "log_model_first",
    "load_champion",
)


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
        build_pipeline,
        fit_candidate,
        inputs,
        labelled,
        out_of_time_split,
        predict,
        split_parts,
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
    parts = split_parts(frame)
    train, test = parts["train"], parts["test"].reset_index(drop=True)
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


def run_mlflow_costs(root: Path, env: dict) -> dict:
    command = [sys.executable, __file__, "--mlflow-costs"]
    result = measure(command, env, root / "mlflow_costs.log")
    return json.loads(result["output"][-1])


def import_mlflow() -> None:
    import mlflow.sklearn  # noqa: F401
    import skops.io  # noqa: F401


def mlflow_costs_main() -> None:
    """CPU seconds of MLflow's share of the training job, each measured alone in this process:
    the imports (after Dagster's and scikit-learn's, as in the job), opening the store, loading
    the champion, a new store, the run's details (params, dataset inputs, reference values) and
    logging the champion as the job logs a candidate (first call in a process, then again).
    Runs after the benchmark's warm run, whose store and champion it uses; what it writes goes
    to a temporary store."""
    import resource

    import dagster  # noqa: F401  (loaded in the job before MLflow)
    import pyarrow.parquet as pq

    from lending_pipeline.defs.resources import MlflowTracking, arrow_to_pandas, resolve_data_dir
    from lending_pipeline.defs.training import log_datasets
    from lending_pipeline.ml import tracking
    from lending_pipeline.ml.scoring import REFERENCE_ARTIFACT, reference_values
    from lending_pipeline.ml.train import inputs, split_digests, split_parts
    from lending_pipeline.spec import load_spec

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    costs: dict[str, float] = {}

    def timed(name: str, work):
        began = cpu()
        result = work()
        costs[name] = cpu() - began
        return result

    spec = load_spec()
    frame = arrow_to_pandas(
        pq.read_table(resolve_data_dir() / "warehouse" / "training_set" / "all.parquet")
    )
    parts = split_parts(frame)
    digests = split_digests(parts)
    example = inputs(spec, parts["validation"].head(50))
    timed("import_mlflow_skops", import_mlflow)
    registry = MlflowTracking().config(spec.name)
    timed("open_store", lambda: tracking.experiment_id(registry))
    champion = tracking.alias_version(registry, tracking.CHAMPION)
    model = timed("load_champion", lambda: tracking.load_model(registry, champion))
    with tempfile.TemporaryDirectory() as scratch:
        store = tracking.TrackingConfig(
            tracking.default_tracking_uri(Path(scratch)),
            "costs",
            (Path(scratch) / "artifacts").as_uri(),
            registry.registered_model,
        )
        timed("new_store", lambda: tracking.experiment_id(store))
        import mlflow

        def run_details() -> None:
            mlflow.log_params({"model_type": spec.model.type, **spec.model.params})
            log_datasets(mlflow, frame, spec.primary_source.date_column, digests)
            mlflow.log_dict(reference_values(spec, frame), REFERENCE_ARTIFACT)

        for name in ("log_model_first", "log_model_again"):
            with tracking.start_run(store, name, {}):
                if name == "log_model_first":
                    timed("run_details", run_details)
                timed(name, lambda: tracking.log_model(store, model, example, {}))
    print(json.dumps(costs))


def fastest(pairs: list[tuple[dict, dict]]) -> dict:
    """The fastest run of each side (the least disturbed by other load) and their ratios, and
    the median ratio within pairs (the two runs of a pair follow each other, so a machine whose
    speed drifts over minutes moves both)."""
    dagster = min((d for d, _ in pairs), key=lambda r: r["wall_s"])
    plain = min((p for _, p in pairs), key=lambda r: r["wall_s"])
    return {
        "dagster": dagster,
        "plain": plain,
        "overhead": dagster["wall_s"] / plain["wall_s"],
        "cpu_overhead": dagster["cpu_s"] / plain["cpu_s"],
        "median_pair_overhead": statistics.median(d["wall_s"] / p["wall_s"] for d, p in pairs),
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
        costs = run_mlflow_costs(root, env)
        return {
            "size": size,
            "days": days,
            "root": str(root),
            "materialize_s": prepare_s,
            **runs,
            "mlflow_cpu_s": costs,
        }
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
    parser.add_argument("--mlflow-costs", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.plain:
        plain_main(args.days, args.champion)
        sys.stdout.flush()  # then end as `lending-pipeline` does (`cli.exit_now`), so that
        os._exit(0)  # interpreter teardown counts on neither side
    if args.mlflow_costs:
        mlflow_costs_main()
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
            median = row[store]["median_pair_overhead"]
            print(f"{'':>17} every pair (dagster/plain s): {walls}; median ratio {median:.2f}x")
        costs = row["mlflow_cpu_s"]
        listed = ", ".join(f"{k} {v:.2f}" for k, v in costs.items())
        print(f"{'':>17} MLflow alone, CPU s: {listed}")
        warm = sum(costs[k] for k in WARM_RUN_MLFLOW)
        plain = row["warm"]["plain"]["wall_s"]
        print(
            f"{'':>17} a warm run's MLflow work ({', '.join(WARM_RUN_MLFLOW)}): {warm:.1f} CPU s "
            f"= {warm / plain:.0%} of the plain run's wall time"
        )
    largest = rows[-1]
    for store in ("warm", "fresh"):
        overhead = largest[store]["overhead"]
        verdict = "PASS" if overhead <= TARGET_OVERHEAD else "FAIL"
        print(
            f"target (at {largest['size']:,}, {store} store): overhead {overhead:.2f} "
            f"<= {TARGET_OVERHEAD}: {verdict} "
            f"(median within pairs {largest[store]['median_pair_overhead']:.2f})"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "target_overhead": TARGET_OVERHEAD}, indent=2))


if __name__ == "__main__":
    main()
