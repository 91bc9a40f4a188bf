"""Embedded vs production profile: the same applications over daily partitions and one training
run, through the in-process executor on SQLite and through Celery workers on PostgreSQL.

    .venv/bin/python benchmarks/bench_profiles.py [--applications 1000000] [--days 8] [--workers 2]

Each profile runs in a child process (its workers, for the production profile, are that child's
children): wall time and peak summed RSS of the tree, the time of each phase, and from the
Dagster event log the time steps spent executing against the time their runs took. The
production profile needs the machine's PostgreSQL and RabbitMQ (its own database and vhost).
On 2 cores no speed-up is expected: the report is the overhead and where it goes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingestion import PII_KEY, START, child_env, generate, measure  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "benchmarks" / "results"


def bench_spec(root: Path, days: int) -> Path:
    """The shipped spec with a split that fits `days` days (2 validation, 2 test)."""
    import yaml

    from lending_pipeline.spec import default_spec_path

    data = yaml.safe_load(default_spec_path().read_text())
    data["model"]["split"] = {"validation_days": 2, "test_days": 2}
    data["gates"].update({"min_auc_margin_over_baseline": -0.2, "max_ece": 0.2})
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    assert days >= 6, "at least 6 days: 2 to train on, 2 validation, 2 test"
    return path


def step_times(instance, run_ids: list[str]) -> dict:
    """Seconds the runs took, seconds their steps spent executing (start to success), steps."""
    run_s = step_s = 0.0
    steps = 0
    for run_id in run_ids:
        record = instance.get_run_record_by_id(run_id)
        run_s += (record.end_time or 0) - (record.start_time or 0)
        started: dict[str, float] = {}
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None or not entry.step_key:
                continue
            if event.event_type_value == "STEP_START":
                started[entry.step_key] = entry.timestamp
            elif event.event_type_value == "STEP_SUCCESS" and entry.step_key in started:
                step_s += entry.timestamp - started.pop(entry.step_key)
                steps += 1
    return {"run_s": run_s, "step_s": step_s, "steps": steps}


def child_main(args) -> None:
    """One profile: start its workers (production), the daily job per day (`--workers` runs at
    a time), one training run; a JSON line with the phases and the event-log times."""
    import dagster as dg

    from lending_pipeline.production import worker
    from lending_pipeline.runs import run_partitions, run_training_lean

    phases, workers = {}, []
    began = time.perf_counter()
    if args.child == "production":
        config = worker.write_config(Path(os.environ["DAGSTER_HOME"]) / "celery")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), str(config)])}
        logs = Path(os.environ["DAGSTER_HOME"])
        for number in range(1, args.workers + 1):
            log = (logs / f"worker_{number}.log").open("wb")
            command = worker.command(f"bench{number}", loglevel="WARNING")
            workers.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        time.sleep(5)  # the workers connect; a step sent earlier waits in the queue anyway
    phases["workers_s"] = time.perf_counter() - began
    # Create the instance's storage once: run processes that each create a fresh SQLite storage
    # at the same moment stamp its schema version twice, and it no longer opens.
    dg.DagsterInstance.get().dispose()
    days = [(START + dt.timedelta(days=i)).isoformat() for i in range(args.days)]
    try:
        began = time.perf_counter()
        runs = list(run_partitions(os.environ["LENDING_PIPELINE_SPEC"], days, args.workers))
        phases["daily_s"] = time.perf_counter() - began
        assert all(r.success for r in runs), [r.messages for r in runs if not r.success]
        as_of = (START + dt.timedelta(days=args.days + 120)).isoformat()
        config = {
            "ops": {n: {"config": {"as_of": as_of}} for n in ("training_set", "candidate_model")}
        }
        began = time.perf_counter()
        with dg.DagsterInstance.get() as instance:
            trained = run_training_lean(instance, config, package=False)
            phases["training_s"] = time.perf_counter() - began
            assert trained.success, trained.messages
            daily = step_times(instance, [r.run_id for r in runs])
            training = step_times(instance, [trained.run_id])
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            process.wait(60)
    print(json.dumps({"phases": phases, "daily": daily, "training": training}))


def production_services(root: Path) -> tuple[dict[str, str], callable]:
    """A fresh PostgreSQL database and RabbitMQ vhost; the environment and a clean-up."""
    import psycopg

    from lending_pipeline.production import settings

    admin = os.environ.get("LENDING_PG_URL", settings.PG_URL_DEFAULT)
    name = f"lending_bench_{uuid.uuid4().hex[:8]}"
    url = settings.with_database(admin, name)
    settings.ensure_database(url)
    subprocess.run(["rabbitmqctl", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)  # fmt: skip
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")

    def clean() -> None:
        subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True)
        with psycopg.connect(settings.with_database(admin, "postgres"), autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    env = {
        "DAGSTER_HOME": str(home),
        settings.DAGSTER_PG_URL_ENV: settings.sqlalchemy_url(url),
        settings.MAX_RUNS_ENV: "4",
        settings.EXECUTOR_ENV: "celery",
        settings.CELERY_BROKER_ENV: f"amqp://guest:guest@127.0.0.1:5672/{name}",
    }
    return env, clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applications", "--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="Celery workers and runs at once")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir")
    parser.add_argument("--child", choices=["embedded", "production"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)

    from lending_pipeline.spec import load_spec

    root = Path(tempfile.mkdtemp(prefix="bench-profiles-"))
    spec_path = bench_spec(root, args.days)
    template = root / "template"
    seconds = generate(load_spec(spec_path), template, args.applications, args.days)
    print(f"generated {args.applications:,} applications over {args.days} days in {seconds:.1f}s")
    results = {}
    try:
        for profile in ("embedded", "production"):
            place = root / profile
            shutil.copytree(template, place / "data")
            env = {**child_env(place), "LENDING_PIPELINE_SPEC": str(spec_path),
                   "PYTHONPATH": str(PROJECT), "LENDING_PII_KEY": PII_KEY,
                   "MLFLOW_TRACKING_URI": f"sqlite:///{place / 'data' / 'mlflow' / 'mlflow.db'}",
                   "LENDING_EXECUTOR": "in_process",
                   "LENDING_AUDIT_KEY": "benchmark-only-audit-key-0123456789"}  # fmt: skip
            env.pop("LENDING_AUDIT_URL", None)
            clean = None
            if profile == "production":
                extra, clean = production_services(place)
                env.update(extra)
            command = [sys.executable, __file__, "--child", profile, "--days", str(args.days),
                       "--workers", str(args.workers)]  # fmt: skip
            try:
                measured = measure(command, env, place / "child.log")
            finally:
                if clean:
                    clean()
            measured.update(json.loads(measured.pop("output")[-1]))
            results[profile] = measured
            print(
                f"{profile}: {measured['wall_s']:.1f}s, peak RSS {measured['peak_rss_gb']:.2f} GB"
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(results, args)


def report(results: dict, args, write: bool = True) -> None:
    embedded, production = results["embedded"], results["production"]
    rows = [("wall s", "wall_s"), ("peak RSS GB", "peak_rss_gb"), ("CPU s", "cpu_s"),
            ("other processes' CPU s", "other_cpu_s")]  # fmt: skip
    print(f"\n| {args.applications:,} applications, {args.days} days | embedded | production |")
    print("|---|---|---|")
    for label, key in rows:
        print(f"| {label} | {embedded[key]:.2f} | {production[key]:.2f} |")
    for phase in ("workers_s", "daily_s", "training_s"):
        print(f"| phase {phase[:-2]} s | {embedded['phases'][phase]:.1f} | "
              f"{production['phases'][phase]:.1f} |")  # fmt: skip
    steps = sum(production[job]["steps"] for job in ("daily", "training"))
    extra_cpu = (production["cpu_s"] - embedded["cpu_s"]) / max(steps, 1)
    for job in ("daily", "training"):
        e, p = embedded[job], production[job]
        print(f"| {job}: run s / steps executing s / steps | {e['run_s']:.1f} / "
              f"{e['step_s']:.1f} / {e['steps']} | {p['run_s']:.1f} / {p['step_s']:.1f} / "
              f"{p['steps']} |")  # fmt: skip
        outside_e = (e["run_s"] - e["step_s"]) / max(e["steps"], 1)
        outside_p = (p["run_s"] - p["step_s"]) / max(p["steps"], 1)
        print(f"| {job}: run time outside step execution, per step s | {outside_e:.2f} | "
              f"{outside_p:.2f} |")  # fmt: skip
    print(f"| CPU s per step added by the production profile | | {extra_cpu:.2f} |")
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        saved = {"args": vars(args), **results}
        (RESULTS / "profiles.json").write_text(json.dumps(saved, indent=2))


if __name__ == "__main__":
    main()
