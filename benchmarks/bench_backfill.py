"""The daily path as users run it: the same applications as many small days or a few big ones.

Lands the same number of applications (default 120,000) as 100 days x 1,200 and as 4 days x
30,000, each in a fresh temp dir, and runs ingestion -> validation -> features over every day
with `lending-pipeline materialize` in a child process (wall time, peak RSS of its process
tree). Each shape runs twice: with ranges of days per run (the default) and with one run per
day (`--days-per-run 1`, how it ran before), so the figures compare in one run. Prints the
table, the ratio 100 days / 4 days per mode and the targets; writes
benchmarks/results/backfill.json.

    .venv/bin/python benchmarks/bench_backfill.py [--rows 120000] [--workers 2]
        [--modes ranged per-day]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def run_shape(spec, rows: int, days: int, workers: int, modes: list[str], keep: bool) -> dict:
    """Generate one shape, then materialize it once per mode (the warehouse and the Dagster
    instance fresh each time)."""
    root = Path(tempfile.mkdtemp(prefix=f"bench_backfill_{days}d_"))
    try:
        env = child_env(root)
        out = {"days": days, "per_day": rows // days}
        out["generate_s"] = generate(spec, root / "data", rows, days)
        for mode in modes:
            shutil.rmtree(root / "data" / "warehouse", ignore_errors=True)
            shutil.rmtree(root / "dagster_home", ignore_errors=True)
            env = child_env(root)
            command = [sys.executable, "-m", "lending_pipeline.cli", "materialize"]
            command += ["--workers", str(workers), *MODES[mode]]
            result = measure(command, env, root / f"{mode}.log")
            output = result.pop("output")
            summary = [line for line in output if line.startswith("materialized")]
            if not summary or "0 failed" not in summary[-1]:
                raise RuntimeError(f"{mode} {days} days: " + "\n".join(output[-20:]))
            out[mode] = result
        return out
    finally:
        if keep:
            print(f"  kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT))

    from lending_pipeline.spec import load_spec

    spec = load_spec()
    shapes = {}
    for days, label in SHAPES:
        print(f"{args.rows:,} applications as {days} days ({label}) ...", flush=True)
        shapes[days] = run_shape(spec, args.rows, days, args.workers, args.modes, args.keep)
    header = ["mode", "days", "per day", "wall s", "RSS GB", "CPU s", "others"]
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
        ratio = shapes[many][mode]["wall_s"] / shapes[few][mode]["wall_s"]
        demo = shapes[many][mode]["wall_s"]
        verdicts[mode] = {"ratio": ratio, "demo_daily_s": demo}
        print(
            f"{mode}: {many} days / {few} days wall = {ratio:.2f}x (target <= {TARGET_RATIO:g}x) "
            f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}; {many} x {shapes[many]['per_day']:,}"
            f" in {demo:.1f} s (target < {TARGET_DEMO_S:g} s) "
            f"{'PASS' if demo < TARGET_DEMO_S else 'FAIL'}"
        )
    if {"ranged", "per-day"} <= set(args.modes):
        speedup = shapes[many]["per-day"]["wall_s"] / shapes[many]["ranged"]["wall_s"]
        print(f"ranged vs one run per day, {many} days: {speedup:.1f}x faster")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "cores": os.cpu_count(),
        "workers": args.workers,
        "rows": args.rows,
        "shapes": shapes,
        "verdicts": verdicts,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
