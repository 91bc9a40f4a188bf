"""The daily path as users run it: the same applications as many small days or a few big ones.

Lands the same number of applications (default 120,000) as 100 days x 1,200 and as 4 days x
30,000, each in its own temp dir, and runs ingestion -> validation -> features over every day
with `lending-pipeline materialize` in a child process (wall time, peak RSS and CPU of its
process tree; the warehouse and the Dagster instance fresh each time). Modes: with ranges of
days per run (`ranged`, the default) and with one run per day (`per-day`, `--days-per-run 1`).
The shapes alternate `--repeat` times (100 days, 4 days, 100 days, ...): the machine's speed
drifts over minutes, so each ratio compares runs made side by side, and the verdict is on the
median of those paired ratios. Prints every run, the medians and the targets; writes
benchmarks/results/backfill.json.

    .venv/bin/python benchmarks/bench_backfill.py [--rows 120000] [--workers 2] [--repeat 3]
        [--modes ranged per-day]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingestion import child_env, contention, generate, measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "backfill.json"
SHAPES = [(100, "many small days"), (4, "a few big days")]
MODES = {"ranged": [], "per-day": ["--days-per-run", "1"]}
TARGET_RATIO = 1.5  # 100 days within 1.5x the time of 4 days, same rows
TARGET_DEMO_S = 60.0  # `make demo`'s daily part: 100 days x 1,200


def materialize(root: Path, workers: int, mode: str) -> dict:
    """One `materialize` over every landed day of `root`, from a fresh warehouse and instance."""
    shutil.rmtree(root / "data" / "warehouse", ignore_errors=True)
    shutil.rmtree(root / "dagster_home", ignore_errors=True)
    command = [sys.executable, "-m", "lending_pipeline.cli", "materialize"]
    command += ["--workers", str(workers), *MODES[mode]]
    result = measure(command, child_env(root), root / f"{mode}.log")
    output = result.pop("output")
    summary = [line for line in output if line.startswith("materialized")]
    if not summary or "0 failed" not in summary[-1]:
        raise RuntimeError(f"{mode} {root.name}: " + "\n".join(output[-20:]))
    return result


def median_run(runs: list[dict]) -> dict:
    """Per measure, the median over repeated runs."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each shape, alternating")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT))

    from lending_pipeline.spec import load_spec

    spec = load_spec()
    roots = {days: Path(tempfile.mkdtemp(prefix=f"bench_backfill_{days}d_")) for days, _ in SHAPES}
    shapes = {days: {"days": days, "per_day": args.rows // days} for days, _ in SHAPES}
    runs: dict = {mode: {days: [] for days, _ in SHAPES} for mode in args.modes}
    try:
        for days, label in SHAPES:
            print(f"{args.rows:,} applications as {days} days ({label})", flush=True)
            shapes[days]["generate_s"] = generate(spec, roots[days] / "data", args.rows, days)
        for repeat in range(args.repeat):
            for mode in args.modes:
                for days, _ in SHAPES:
                    run = materialize(roots[days], args.workers, mode)
                    runs[mode][days].append(run)
                    print(
                        f"  {mode} {days} days, run {repeat + 1}/{args.repeat}: "
                        f"{run['wall_s']:.1f} s, {run['cpu_s']:.1f} CPU s, "
                        f"others {contention(run):.0%}",
                        flush=True,
                    )
    finally:
        for root in roots.values():
            if args.keep:
                print(f"  kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    for mode in args.modes:
        for days, _ in SHAPES:
            shapes[days][mode] = {**median_run(runs[mode][days]), "runs": runs[mode][days]}
    header = ["mode", "days", "per day", "wall s", "RSS GB", "CPU s", "others"]
    print(f"medians of {args.repeat} run(s) per shape and mode")
    print(f"{header[0]:<8} {header[1]:>4} " + " ".join(f"{h:>7}" for h in header[2:]))
    for mode in args.modes:
        for days, shape in shapes.items():
            run = shape[mode]
            print(
                f"{mode:<8} {days:>4} {shape['per_day']:>7,} {run['wall_s']:>7.1f} "
                f"{run['peak_rss_gb']:>7.2f} {run['cpu_s']:>7.1f} {contention(run):>7.0%}"
            )
    print("  others: CPU share used by other processes meanwhile (contention inflates wall time)")
    many, few = (days for days, _ in SHAPES)
    verdicts = {}
    for mode in args.modes:
        pairs = list(zip(runs[mode][many], runs[mode][few], strict=True))
        ratios = [a["wall_s"] / b["wall_s"] for a, b in pairs]
        cpu_ratio = statistics.median(a["cpu_s"] / b["cpu_s"] for a, b in pairs)
        ratio = statistics.median(ratios)
        demo = shapes[many][mode]["wall_s"]
        verdicts[mode] = {
            "ratio": ratio,
            "ratios": ratios,
            "cpu_ratio": cpu_ratio,
            "demo_daily_s": demo,
        }
        print(
            f"{mode}: {many} days / {few} days wall = {ratio:.2f}x, median of "
            f"{', '.join(f'{r:.2f}' for r in ratios)} (target <= {TARGET_RATIO:g}x) "
            f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}; CPU {cpu_ratio:.2f}x; "
            f"{many} x {shapes[many]['per_day']:,} in {demo:.1f} s (target < {TARGET_DEMO_S:g} s)"
            f" {'PASS' if demo < TARGET_DEMO_S else 'FAIL'}"
        )
    if {"ranged", "per-day"} <= set(args.modes):
        speedup = shapes[many]["per-day"]["wall_s"] / shapes[many]["ranged"]["wall_s"]
        print(f"ranged vs one run per day, {many} days: {speedup:.1f}x faster")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "cores": os.cpu_count(),
        "workers": args.workers,
        "rows": args.rows,
        "repeat": args.repeat,
        "shapes": shapes,
        "verdicts": verdicts,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
