"""Ingestion -> validation -> features at 100k and 1M applications.

For each size: generate the landing CSVs (timed apart), run the Dagster daily job over every
partition through `lending-pipeline materialize --workers 2` in a child process (wall time, peak
RSS of the process tree), run the same stages in a plain loop in a child process (the baseline
for Dagster's overhead), and time the Pandera schema against equivalent hand-written pandas
checks on the ingested, typed applications and bureau frames. Prints a table and the targets;
writes benchmarks/results/ingestion.json.

    .venv/bin/python benchmarks/bench_ingestion.py [--sizes 100000 1000000] [--days 4]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "benchmarks" / "results" / "ingestion.json"
START = dt.date(2025, 3, 1)
PII_KEY = "benchmark-only-pseudonymisation-key"
WORKERS = 2
TARGETS = {"wall_s": 60.0, "peak_rss_gb": 4.0, "validation_ratio": 2.0}
DTYPES = {
    "string": "string",
    "category": "string",
    "int": "Int64",
    "float": "float64",
    "bool": "boolean",
    "date": "datetime64[ns]",
}


def child_env(root: Path) -> dict[str, str]:
    """Environment of a pipeline child: data dir, PII key and a Dagster home configured as
    `make` configures the embedded profile's (deploy/dagster.local.yaml: no telemetry, the
    event log with open connections)."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    local = Path(__file__).resolve().parents[1] / "deploy" / "dagster.local.yaml"
    (home / "dagster.yaml").write_text(local.read_text())
    return {
        **os.environ,
        "LENDING_DATA_DIR": str(root / "data"),
        "LENDING_PII_KEY": PII_KEY,
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "yes",
        "DO_NOT_TRACK": "true",
        "GX_ANALYTICS_ENABLED": "false",
    }


def days_of(count: int) -> list[str]:
    return [(START + dt.timedelta(days=i)).isoformat() for i in range(count)]


def generate(spec, data_dir: Path, size: int, days: int) -> float:
    """Write the landing files for `size` applications over `days` days; return seconds."""
    from lending_pipeline.ml.synth import generate_consumer_loans

    began = time.perf_counter()
    generate_consumer_loans(
        spec,
        data_dir,
        START,
        days,
        size // days,
        seed=7,
        as_of=START + dt.timedelta(days=days + 120),
    )
    return time.perf_counter() - began


def tree_usage(process: psutil.Process, cpu: dict[int, float]) -> int:
    """Summed RSS of a process and its descendants (bytes); records each one's CPU seconds."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
            times = member.cpu_times()
            cpu[member.pid] = times.user + times.system
    return total


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores)."""
    times = psutil.cpu_times()
    busy = ("user", "nice", "system", "irq", "softirq", "steal")
    return sum(getattr(times, field, 0.0) for field in busy)


def measure(command: list[str], env: dict, log: Path) -> dict:
    """Run a command: wall s, peak summed RSS of its tree (50 ms samples), its CPU s, and the
    CPU s other processes (not this sampler) used meanwhile: contention that inflates wall time."""
    cpu: dict[int, float] = {}
    peak = 0
    busy = busy_seconds() + time.process_time()
    began = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        process = psutil.Process(child.pid)
        while child.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                peak = max(peak, tree_usage(process, cpu))
            time.sleep(0.05)
    wall = time.perf_counter() - began
    busy = busy_seconds() - time.process_time() - busy
    if child.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}:\n{tail}")
    return {
        "wall_s": wall,
        "peak_rss_gb": peak / 1e9,
        "cpu_s": sum(cpu.values()),
        "other_cpu_s": max(busy - sum(cpu.values()), 0.0),
        "output": log.read_text().splitlines(),
    }


def run_dagster(root: Path, env: dict) -> dict:
    """The daily job over every landed partition, through the CLI."""
    command = [str(BIN / "lending-pipeline"), "materialize", "--workers", str(WORKERS)]
    result = measure(command, env, root / "dagster.log")
    output = result.pop("output")
    starts = [i for i, line in enumerate(output) if line.startswith("materialized")]
    return {**result, "summary": output[starts[-1] :] if starts else []}


def run_plain(root: Path, env: dict, days: int) -> dict:
    """The same stages without Dagster, in a child process running this script."""
    command = [str(BIN / "python"), __file__, "--plain", "--days", str(days)]
    result = measure(command, env, root / "plain.log")
    stages = json.loads(result.pop("output")[-1])
    return {**result, "stage_s": stages}


def plain_partition(day: str) -> dict[str, float]:
    """Ingest -> pandas -> validate (Pandera + expectations) -> features for one day."""
    from lending_pipeline.defs.resources import arrow_to_pandas
    from lending_pipeline.ml.expectations import run_expectations
    from lending_pipeline.ml.features import build_features
    from lending_pipeline.ml.ingest import ingest
    from lending_pipeline.ml.pii import key_bytes
    from lending_pipeline.ml.validation import validate_source
    from lending_pipeline.spec import load_spec

    spec = load_spec()
    data_dir = Path(os.environ["LENDING_DATA_DIR"])
    key = key_bytes(os.environ["LENDING_PII_KEY"])
    seconds = dict.fromkeys(["ingest", "to_pandas", "validate", "expectations", "features"], 0.0)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] += now - clock
        clock = now

    valid = {}
    for source in spec.sources:
        table = ingest(source, data_dir, day, key).table
        lap("ingest")
        raw = arrow_to_pandas(table)
        lap("to_pandas")
        dated = source.name == spec.entity.source
        outcome = validate_source(raw, source, day, partition_dated=dated)
        lap("validate")
        if source.expectations:
            run_expectations(outcome.valid, source.expectations, source.name)
        lap("expectations")
        valid[source.name] = outcome.valid
    build_features(spec, valid)
    lap("features")
    return seconds


def plain_main(days: int) -> None:
    """Child entry point: run every partition over WORKERS processes; print stage seconds."""
    totals: dict[str, float] = {}
    with ProcessPoolExecutor(WORKERS, mp_context=get_context("spawn")) as pool:
        for seconds in pool.map(plain_partition, days_of(days)):
            for stage, value in seconds.items():
                totals[stage] = totals.get(stage, 0.0) + value
    print(json.dumps(totals))


def typed_frame(spec, source_name: str, data_dir: Path, days: int) -> pd.DataFrame:
    """Every partition of a source, ingested and coerced to the spec's dtypes."""
    from lending_pipeline.defs.resources import arrow_to_pandas
    from lending_pipeline.ml.ingest import ingest
    from lending_pipeline.ml.validation import coerce

    source = spec.source_by_name[source_name]
    frames = []
    for day in days_of(days):
        raw = arrow_to_pandas(ingest(source, data_dir, day, PII_KEY.encode()).table)
        frames.append(coerce(raw, source)[0])
    return pd.concat(frames, ignore_index=True)


def allowed_values(spec) -> list:
    cast = {"int": int, "float": float}.get(spec.dtype, str)
    return [cast(v) for v in spec.allowed]


def hand_checks(typed: pd.DataFrame, source, today: dt.date) -> dict:
    """The schema's rules as vectorised pandas: failing-row masks (or dtype flags) per rule."""
    failures = {}
    today_ts = pd.Timestamp(today)
    for name, spec in source.columns.items():
        column = typed[name]
        present = column.notna()
        failures[f"{name}:dtype"] = str(column.dtype) != DTYPES[spec.dtype]
        if not spec.nullable:
            failures[f"{name}:not_null"] = ~present
        if spec.min is not None or spec.max is not None:
            low = -float("inf") if spec.min is None else spec.min
            high = float("inf") if spec.max is None else spec.max
            failures[f"{name}:range"] = present & ~column.between(low, high).fillna(False)
        if spec.allowed is not None:
            failures[f"{name}:allowed"] = present & ~column.isin(allowed_values(spec))
        if spec.dtype == "date":
            failures[f"{name}:not_in_future"] = present & ~(column <= today_ts).fillna(False)
    failures["unique_key"] = typed.duplicated(subset=list(source.key), keep=False)
    return failures


def median_seconds(action, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def pandera_or_failures(schema, typed: pd.DataFrame) -> None:
    """Validate lazily; failures are expected output, not an error."""
    import pandera.pandas as pa

    with contextlib.suppress(pa.errors.SchemaErrors):
        schema.validate(typed, lazy=True)


def compare_validation(spec, data_dir: Path, days: int) -> dict:
    """Pandera schema vs hand-written checks on applications and bureau, medians of 3."""
    from lending_pipeline.ml.validation import build_schema

    today = dt.datetime.now(dt.UTC).date()
    out = {"pandera_s": 0.0, "hand_s": 0.0, "sources": {}}
    for name in ("applications", "bureau"):
        source = spec.source_by_name[name]
        typed = typed_frame(spec, name, data_dir, days)
        schema = build_schema(source, START.isoformat(), today)
        pandera = median_seconds(lambda s=schema, t=typed: pandera_or_failures(s, t))
        hand = median_seconds(lambda t=typed, s=source: hand_checks(t, s, today))
        out["sources"][name] = {"rows": len(typed), "pandera_s": pandera, "hand_s": hand}
        out["pandera_s"] += pandera
        out["hand_s"] += hand
    out["ratio"] = out["pandera_s"] / out["hand_s"]
    return out


def bench_size(spec, size: int, days: int, keep: bool) -> dict:
    """Every measurement for one size, in a fresh temp dir."""
    root = Path(tempfile.mkdtemp(prefix=f"bench_ingestion_{size}_"))
    try:
        env = child_env(root)
        data_dir = root / "data"
        row = {"size": size, "days": days, "generate_s": generate(spec, data_dir, size, days)}
        row["dagster"] = run_dagster(root, env)
        row["plain"] = run_plain(root, env, days)
        row["overhead"] = row["dagster"]["wall_s"] / row["plain"]["wall_s"]
        row["validation"] = compare_validation(spec, data_dir, days)
        return row
    finally:
        if keep:
            print(f"  kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


HEADER = (
    f"{'size':>9} {'gen s':>6} {'dagster s':>9} {'RSS GB':>6} {'CPU s':>6} {'plain s':>7} "
    f"{'plain GB':>8} {'overhead':>8} {'pandera s':>9} {'hand s':>6} {'ratio':>5} {'others':>6}"
)


def contention(run: dict) -> float:
    """Share of the machine's CPU that other processes used during a run."""
    return run["other_cpu_s"] / (run["wall_s"] * (os.cpu_count() or 1))


def table_line(row: dict) -> str:
    d, p, v = row["dagster"], row["plain"], row["validation"]
    return (
        f"{row['size']:>9,} {row['generate_s']:>6.1f} {d['wall_s']:>9.1f} "
        f"{d['peak_rss_gb']:>6.2f} {d['cpu_s']:>6.1f} {p['wall_s']:>7.1f} "
        f"{p['peak_rss_gb']:>8.2f} {row['overhead']:>7.2f}x {v['pandera_s']:>9.2f} "
        f"{v['hand_s']:>6.2f} {v['ratio']:>4.1f}x {contention(d):>6.0%}"
    )


def verdicts(rows: list[dict]) -> dict[str, dict]:
    """The issue's targets, judged on the largest size measured."""
    row = max(rows, key=lambda r: r["size"])
    actual = {
        "wall_s": row["dagster"]["wall_s"],
        "peak_rss_gb": row["dagster"]["peak_rss_gb"],
        "validation_ratio": row["validation"]["ratio"],
    }
    return {
        name: {
            "size": row["size"],
            "actual": actual[name],
            "target": f"< {limit:g}",
            "pass": actual[name] < limit,
        }
        for name, limit in TARGETS.items()
    }


def report(rows: list[dict]) -> dict:
    print(HEADER)
    for row in rows:
        print(table_line(row))
    print("  CPU s: the Dagster process tree; others: CPU share used by other processes meanwhile")
    for row in rows:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in row["plain"]["stage_s"].items())
        print(f"  {row['size']:,} plain stage seconds (summed over partitions): {stages}")
    judged = verdicts(rows)
    labels = {
        "wall_s": "end to end through features, s",
        "peak_rss_gb": "peak RSS, GB",
        "validation_ratio": "Pandera / hand-written",
    }
    print(f"targets ({os.cpu_count()} cores, judged at {judged['wall_s']['size']:,}):")
    for name, verdict in judged.items():
        flag = "PASS" if verdict["pass"] else "FAIL"
        print(f"  {flag}  {labels[name]}: {verdict['actual']:.2f} (target {verdict['target']})")
    return judged


def parse_args(description: str, sizes: list[int], days: int) -> argparse.Namespace:
    """The options every benchmark takes (`--plain` runs its baseline in a child process)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sizes", type=int, nargs="+", default=sizes)
    parser.add_argument("--days", type=int, default=days, help="daily partitions per size")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs")
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [100_000, 1_000_000], 4)
    if args.plain:
        plain_main(args.days)
        return

    from lending_pipeline.spec import load_spec

    spec = load_spec()
    rows = []
    for size in args.sizes:
        print(f"benchmarking {size:,} applications over {args.days} days ...", flush=True)
        rows.append(bench_size(spec, size, args.days, args.keep))
    judged = report(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"cores": os.cpu_count(), "workers": WORKERS, "rows": rows, "targets": judged}
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
