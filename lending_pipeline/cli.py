"""`lending-pipeline`: generate data, run the pipeline headless, check a spec; serve, deploy,
roll back and audit (see `serving/commands.py`)."""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

from lending_pipeline.privacy_commands import add_commands as add_privacy_commands
from lending_pipeline.production.commands import add_commands as add_production_commands
from lending_pipeline.products import select_product
from lending_pipeline.serving.commands import add_commands as add_serving_commands
from lending_pipeline.spec import SpecError, load_spec

CONSUMER_SOURCES = {"applications", "bureau", "income", "outcomes"}


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text}") from None


def _data_dir(args) -> Path:
    from lending_pipeline.defs.resources import resolve_data_dir

    return resolve_data_dir(args.data_dir)


def cmd_generate(args) -> int:
    from lending_pipeline.ml.corrupt import CORRUPTIONS, corrupt
    from lending_pipeline.ml.damage import BY_KIND, apply
    from lending_pipeline.ml.synth import generate_consumer_loans, partition_path
    from lending_pipeline.ml.synth_generic import generate_from_spec

    spec = load_spec(args.spec)
    data_dir = _data_dir(args)
    if args.start and not args.end:
        start, end = args.start, args.start + dt.timedelta(days=args.days - 1)
    else:
        end = args.end or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        start = args.start or end - dt.timedelta(days=args.days - 1)
    if start > end:
        print(f"--start {start} is after --end {end}", file=sys.stderr)
        return 2
    days = (end - start).days + 1
    as_of = args.as_of or end + dt.timedelta(days=1)
    began = time.perf_counter()
    use_consumer = {s.name for s in spec.sources} == CONSUMER_SOURCES and not args.generic
    if use_consumer:
        result = generate_consumer_loans(
            spec,
            data_dir,
            start,
            days,
            args.per_day,
            seed=args.seed,
            scenario=args.scenario,
            scenario_start=args.scenario_start,
            as_of=as_of,
            progress=sys.stderr.isatty() or days * args.per_day >= 200_000,
        )
        files, applications = result.files, result.applications
        extra = f", default rate {result.default_rate:.1%}"
    else:
        if args.scenario:
            print("scenarios need the consumer-loan generator", file=sys.stderr)
            return 2
        files = generate_from_spec(spec, data_dir, start, days, args.per_day, args.seed, as_of)
        applications, extra = days * args.per_day, " (spec-driven random data)"
    print(
        f"generated {applications:,} applications over {days} days ({start} to {end}) "
        f"in {time.perf_counter() - began:.1f}s: {files} files under {data_dir}{extra}"
    )
    if args.corrupt:
        source = spec.source_by_name[args.corrupt_source or spec.entity.source]
        day = (args.corrupt_day or end).isoformat()
        path = partition_path(data_dir, source, day)
        if args.corrupt in CORRUPTIONS:
            corrupt(path, args.corrupt, args.corrupt_column)
        elif args.corrupt in BY_KIND and BY_KIND[args.corrupt].applies_to(source, spec.entity.key):
            apply(BY_KIND[args.corrupt], path, source, spec.entity.key)
        else:
            kinds = sorted({*CORRUPTIONS, *BY_KIND})
            print(
                f"unknown corruption '{args.corrupt}' for {source.name}; kinds: {', '.join(kinds)}"
            )
            return 2
        print(f"corrupted {path} ({args.corrupt})")
    return 0


def _instance():
    import dagster as dg

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.get()


def cmd_materialize(args) -> int:
    from lending_pipeline.runs import (
        default_days_per_run,
        landed_days,
        landed_partitions,
        outside_window,
        run_partitions,
        warehouse_rows,
    )

    spec = load_spec(args.spec)
    data_dir = _data_dir(args)
    os.environ["LENDING_DATA_DIR"] = str(data_dir)
    if args.partition:
        outside = outside_window(spec, args.partition)
        if outside:
            print("no partition for these days; nothing was run:", file=sys.stderr)
            for reason in outside:
                print(f"  {reason}", file=sys.stderr)
            return 2
        partitions = args.partition
    else:
        partitions = landed_partitions(spec, data_dir)
        ignored = outside_window(spec, landed_days(spec, data_dir))
        if ignored:
            print(f"landing files ignored for {len(ignored)} day(s) without a partition:")
            for reason in ignored:
                print(f"  {reason}")
    if not partitions:
        print(f"no landing files under {data_dir}: run `lending-pipeline generate` first")
        return 1
    instance = _instance()
    began = time.perf_counter()
    runs = []
    from lending_pipeline.backfill import Backfill
    from lending_pipeline.definitions import DAILY_JOB
    from lending_pipeline.progress import with_progress

    backfill = Backfill(DAILY_JOB, partitions, f"lending-pipeline materialize ({spec.name})")
    per_run = args.days_per_run or default_days_per_run(spec, data_dir, partitions, args.workers)
    batch = run_partitions(args.spec, partitions, args.workers, backfill.tags, per_run)
    for run in with_progress(batch, len(partitions)):
        runs.append(run)
        for problem in run.problems:
            print(f"  {problem.line()}")
            if problem.traceback:
                print(problem.traceback)
    elapsed = time.perf_counter() - began
    failed = [r for r in runs if not r.success or r.failed_checks]
    backfill.finish(instance, len(failed))
    print(
        f"materialized {len(runs)} partitions of '{spec.name}' in {elapsed:.1f}s "
        f"({len(runs) - len(failed)} passed every check, {len(failed)} failed)"
    )
    print(f"  one Dagster backfill {backfill.id}: http://127.0.0.1:3000{backfill.ui_path()}")
    if failed:
        print(f"  failed partitions (no features): {', '.join(r.partition for r in failed)}")
    failed_days = {r.partition for r in failed}
    passed = [r.partition for r in runs if r.partition not in failed_days]
    rows = warehouse_rows(data_dir, partitions)
    for source in spec.sources:
        raw = rows.get(f"raw_{source.name}", 0)
        quarantined = rows.get(f"quarantine_{source.name}", 0)
        print(
            f"  {source.name:<14} ingested {raw:>9,}  validated "
            f"{rows.get(f'validated_{source.name}', 0):>9,}  quarantined {quarantined:>7,}"
        )
    features = warehouse_rows(data_dir, passed).get("applicant_features", 0)
    print(f"  applicant_features rows: {features:,} (from the {len(passed)} passed partitions)")
    print(f"  warehouse: {data_dir / 'warehouse'}")
    print(f"  Dagster instance: {os.environ['DAGSTER_HOME']}")
    return 1 if failed and not args.allow_failures else 0


def cmd_train(args) -> int:
    from lending_pipeline.definitions import build_definitions
    from lending_pipeline.runs import run_training, summarize

    spec = load_spec(args.spec)
    data_dir = _data_dir(args)
    os.environ["LENDING_DATA_DIR"] = str(data_dir)
    instance = _instance()
    began = time.perf_counter()
    config = {}
    if args.as_of:
        settings = {"as_of": args.as_of.isoformat()}
        config = {
            "ops": {name: {"config": settings} for name in ("training_set", "candidate_model")}
        }
    result = run_training(build_definitions(spec), instance, config, package=not args.no_package)
    run = summarize(result)
    print(f"training run {run.run_id} finished in {time.perf_counter() - began:.1f}s")
    for evaluation in result.get_asset_check_evaluations():
        verdict = "pass" if evaluation.passed else "FAIL"
        print(f"  [{verdict}] {evaluation.description}")
    for problem in run.problems:
        if problem.kind != "check":  # checks are listed above
            print(f"  {problem.line()}")
            if problem.traceback:
                print(problem.traceback)
    champion = _materialized(result, "champion_model")
    if champion and "pending_version" in champion:
        pending = champion["pending_version"].value
        print(f"  pending: version {pending} passed every gate and awaits approval")
        print(f"    lending-pipeline approve {pending} --by NAME --reason TEXT")
    elif champion:
        print(f"  promoted: champion is now version {champion['champion_version'].value}")
    else:
        print("  not promoted: the champion is unchanged")
    bento = _materialized(result, "scoring_bento")
    if bento:
        print(f"  packaged: bento {bento['bento_tag'].value} (make serve serves it)")
    data = data_dir / "mlflow"
    print(f"  MLflow: {os.environ.get('MLFLOW_TRACKING_URI') or 'sqlite under ' + str(data)}")
    if run.success:
        return 0
    return 0 if run.refused_by_gates and args.allow_refusal else 1


def _materialized(result, step: str) -> dict | None:
    """Metadata of a step's materialization in a run result, or None."""
    for event in result.all_events:
        if event.is_step_materialization and event.step_key == step:
            return event.event_specific_data.materialization.metadata
    return None


def _drift_summary(result) -> dict | None:
    """The drift_report materialization metadata of a monitoring run, as plain values."""
    metadata = _materialized(result, "drift_report")
    return {k: v.value for k, v in metadata.items()} if metadata else None


def cmd_monitor(args) -> int:
    from lending_pipeline.definitions import build_definitions
    from lending_pipeline.runs import landed_partitions, run_monitoring

    spec = load_spec(args.spec)
    data_dir = _data_dir(args)
    os.environ["LENDING_DATA_DIR"] = str(data_dir)
    instance = _instance()
    defs = build_definitions(spec)
    failed = 0
    for partition in args.partition or landed_partitions(spec, data_dir)[-1:]:
        result = run_monitoring(defs, instance, partition, evidently=not args.no_report)
        drift = _drift_summary(result)
        if drift is None:
            failed += 1
            print(f"  {partition}: the monitoring run failed (run {result.run_id})")
            continue
        print(f"  {partition}: {_drift_line(drift)}")
        for evaluation in result.get_asset_check_evaluations():
            verdict = "pass" if evaluation.passed else f"FAIL ({evaluation.severity.value})"
            print(f"      [{verdict}] {evaluation.check_name}: {evaluation.description}")
    return 1 if failed else 0


def _drift_line(drift: dict) -> str:
    features = ", ".join(f"{k} {v:.3f}" for k, v in drift.get("drifted_features", {}).items())
    return (
        f"tier {drift['worst_tier']}; drifted: {features or 'none'}; "
        f"missing-field spikes: {drift.get('missing_field_spikes', 'n/a')}; "
        f"score PSI {drift.get('score_psi', 'n/a')}"
    )


def cmd_drift_demo(args) -> int:
    """Normal days, a champion, drifted days, the drift sensor, a gated retraining."""
    import shutil

    from lending_pipeline.definitions import build_definitions
    from lending_pipeline.defs.automation import CHECK_FAILURE_SENSOR, DRIFT_SENSOR
    from lending_pipeline.ml import tracking
    from lending_pipeline.ml.alerts import alerts_path
    from lending_pipeline.ml.synth import generate_consumer_loans
    from lending_pipeline.runs import (
        launch_requested,
        run_monitoring,
        run_partitions,
        run_training,
        summarize,
        tick_sensor,
    )

    began = time.perf_counter()
    spec = load_spec(args.spec)
    if {s.name for s in spec.sources} != CONSUMER_SOURCES:
        print("drift-demo needs the consumer-loan generator (its spec's sources)", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    data_dir = workdir / "data"
    os.environ["LENDING_DATA_DIR"] = str(data_dir)
    os.environ["DAGSTER_HOME"] = str(workdir / "dagster_home")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"
    os.environ.pop("LENDING_AUDIT_URL", None)
    os.environ.setdefault("LENDING_PII_KEY", "drift-demo-" + os.urandom(16).hex())
    if not os.environ.get("LENDING_AUDIT_KEY_FILE"):
        os.environ.setdefault("LENDING_AUDIT_KEY", "drift-demo-audit-" + os.urandom(16).hex())
    instance = _instance()
    today = dt.datetime.now(dt.UTC).date()
    maturity = spec.target.maturity_days
    start = today - dt.timedelta(days=maturity + 10 + args.days + args.drift_days)
    drift_start = start + dt.timedelta(days=args.days)
    generate_consumer_loans(
        spec,
        data_dir,
        start,
        args.days + args.drift_days,
        args.per_day,
        seed=args.seed,
        scenario=args.scenario,
        scenario_start=drift_start,
        as_of=today,
    )
    days = [(start + dt.timedelta(days=i)).isoformat() for i in range(args.days)]
    drifted = [(drift_start + dt.timedelta(days=i)).isoformat() for i in range(args.drift_days)]
    print(
        f"1. generated {args.days} normal days ({days[0]}..{days[-1]}) and {args.drift_days} "
        f"{args.scenario} days ({drifted[0]}..{drifted[-1]}), {args.per_day} applications a "
        f"day, under {data_dir}"
    )
    spec_path = args.spec or os.environ.get("LENDING_PIPELINE_SPEC")
    runs = list(run_partitions(spec_path, days, args.workers))
    bad = [r.partition for r in runs if not r.success]
    print(f"2. materialized the normal days: {len(runs) - len(bad)} of {len(runs)} passed")
    if bad:
        return 1
    defs = build_definitions(spec)
    settings = _tracking(spec)
    first = summarize(run_training(defs, instance))
    champion = tracking.alias_version(settings, tracking.CHAMPION)
    print(f"3. trained a champion: run {first.run_id}, champion version {champion}")
    if champion is None:
        print("   no champion: the gates refused the first model", file=sys.stderr)
        return 1
    list(run_partitions(spec_path, drifted, args.workers))
    print("4. materialized the drifted days; drift reports against the champion's range:")
    for day in drifted:
        result = run_monitoring(defs, instance, day)
        drift = _drift_summary(result) or {}
        print(f"   {day}: {_drift_line(drift)}")
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        within = checks.get("drift_report_within_limits")
        if within is not None:
            verdict = "pass" if within.passed else f"FAIL ({within.severity.value})"
            print(f"      [{verdict}] drift_report_within_limits: {within.description}")
        if drift.get("evidently_report"):
            print(f"      report: {drift['evidently_report']}")
    tick = tick_sensor(defs, instance, DRIFT_SENSOR)
    print(
        f"5. {DRIFT_SENSOR} tick: {len(tick.run_requests)} run request(s)"
        + (f"; skipped: {tick.skip_message}" if tick.skip_message else "")
    )
    for request in tick.run_requests:
        print(f"   run key {request.run_key}")
        result = launch_requested(defs, instance, DRIFT_SENSOR, request)
        if result is None:
            print("   already launched (same run key): not launched again")
            continue
        run = summarize(result)
        print(f"6. retraining run {run.run_id} ({'success' if run.success else 'failed'}), tags:")
        for key, value in sorted(result.dagster_run.tags.items()):
            if key.startswith(("lending/", "dagster/run_key", "dagster/sensor")):
                print(f"      {key} = {value}")
        for evaluation in result.get_asset_check_evaluations():
            verdict = "pass" if evaluation.passed else "FAIL"
            print(f"      [{verdict}] {evaluation.description}")
    after = tracking.alias_version(settings, tracking.CHAMPION)
    moved = "promoted" if after != champion else "unchanged (a gate refused the candidate)"
    print(f"7. champion version {champion} -> {after}: {moved}")
    latest = tracking.version_tags(settings, max(_versions(settings), key=int))
    lineage = {k: v for k, v in latest.items() if k.startswith("lending_")}
    print(f"   latest model version's drift lineage tags: {lineage}")
    tick_sensor(defs, instance, CHECK_FAILURE_SENSOR, '{"last_id": 0}')
    path = alerts_path(data_dir)
    count = len(path.read_text().splitlines()) if path.exists() else 0
    print(f"8. {count} alert(s) from failed checks in {path}")
    print(f"drift demo finished in {time.perf_counter() - began:.0f}s (workdir {workdir})")
    return 0


def _tracking(spec):
    from lending_pipeline.defs.resources import MlflowTracking

    return MlflowTracking().config(spec.name)


def _versions(settings) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    found = client.search_model_versions(f"name='{settings.registered_model}'")
    return [v.version for v in found]


def cmd_spec_check(args) -> int:
    from lending_pipeline.ml.evidence import spec_warnings

    if args.path == "init":
        return _spec_init(args)
    spec = load_spec(args.path)
    print(
        f"spec '{spec.name}' is valid: {len(spec.sources)} sources, "
        f"{len(spec.features.model_inputs)} model inputs, digest {spec.digest[:12]}"
    )
    for warning in spec_warnings(spec, _data_dir(args)):
        print(f"  warning: {warning}")
    return 0


def _spec_init(args) -> int:
    """`spec init --from-files DIR`: draft a spec from landing files."""
    from pydantic import ValidationError

    from lending_pipeline.spec import PipelineSpec
    from lending_pipeline.spec_draft import draft_spec, render

    if not args.from_files:
        print("spec init needs --from-files DIR (the landing files to draft from)", file=sys.stderr)
        return 2
    root = Path(args.from_files).resolve()
    data_dir = _data_dir(args)
    base = data_dir if root.is_relative_to(data_dir) else root
    try:
        draft, review = draft_spec(root, base, args.name)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    output = Path(args.output)
    output.write_text(render(draft, review), encoding="utf-8")
    print(f"drafted spec '{args.name}' from {root} into {output} (files relative to {base})")
    for item in review:
        print(f"  confirm: {item}")
    try:
        PipelineSpec.model_validate(draft)
    except ValidationError as exc:
        print(f"the draft does not validate yet; fix these, then `lending-pipeline spec {output}`:")
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"])
            print(f"  {location}: {error['msg'].removeprefix('Value error, ')}")
        return 1
    print(f"the draft validates; review it, then `lending-pipeline spec {output}`")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="lending-pipeline", description=__doc__)
    main.add_argument(
        "--product",
        help="the product of the products file (LENDING_PRODUCTS) to act on "
        "(default: LENDING_PRODUCT, else the file's default)",
    )
    sub = main.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write synthetic landing files")
    gen.add_argument("--spec", help="spec file (default: LENDING_PIPELINE_SPEC or shipped)")
    gen.add_argument("--data-dir", help="default: LENDING_DATA_DIR or data/")
    gen.add_argument("--days", type=int, default=150, help="number of days (default 150)")
    gen.add_argument("--per-day", type=int, default=400, help="applications a day (default 400)")
    gen.add_argument("--start", type=_date, help="first day (default: end - days + 1)")
    gen.add_argument(
        "--end", type=_date, help="last day (default: start + days - 1, else yesterday, UTC)"
    )
    gen.add_argument("--as-of", type=_date, help="what exists by then (default: end + 1 day)")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument(
        "--scenario", choices=["income_shock", "utilization_spike", "missing_bureau_fields"]
    )
    gen.add_argument("--scenario-start", type=_date, help="first day of the scenario")
    gen.add_argument("--generic", action="store_true", help="spec-driven random data")
    gen.add_argument(
        "--corrupt",
        help="corrupt one landing file afterwards: a kind of docs/spec.md's bad-file table",
    )
    gen.add_argument("--corrupt-source", help="source to corrupt (default: the entity source)")
    gen.add_argument("--corrupt-day", type=_date, help="day to corrupt (default: the last)")
    gen.add_argument("--corrupt-column", help="column the corruption targets")
    gen.set_defaults(func=cmd_generate)

    mat = sub.add_parser("materialize", help="run the daily job for landed partitions")
    mat.add_argument("--spec")
    mat.add_argument("--data-dir")
    mat.add_argument("--partition", action="append", help="only this day (repeatable)")
    mat.add_argument("--allow-failures", action="store_true", help="exit 0 on failed checks")
    mat.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="parallel runs (default: cores)"
    )
    mat.add_argument(
        "--days-per-run",
        type=int,
        help="consecutive days per run (default: an even share per worker, at most 31; "
        "1: one run per day)",
    )
    mat.set_defaults(func=cmd_materialize)

    train = sub.add_parser("train", help="train, evaluate against the gates, promote")
    train.add_argument("--spec")
    train.add_argument("--data-dir")
    train.add_argument("--as-of", type=_date, help="maturity reference date (default: today)")
    train.add_argument(
        "--allow-refusal",
        action="store_true",
        help="exit 0 when the run completed and a gate refused the promotion",
    )
    train.add_argument(
        "--no-package", action="store_true", help="do not build the new champion's Bento"
    )
    train.set_defaults(func=cmd_train)

    mon = sub.add_parser("monitor", help="drift reports of partitions against the champion")
    mon.add_argument("--spec")
    mon.add_argument("--data-dir")
    mon.add_argument(
        "--partition", action="append", help="this day (repeatable; default: the last landed)"
    )
    mon.add_argument("--no-report", action="store_true", help="skip the Evidently HTML report")
    mon.set_defaults(func=cmd_monitor)

    demo = sub.add_parser(
        "drift-demo", help="drift -> sensor -> retraining -> gated promotion, in a scratch dir"
    )
    demo.add_argument("--spec")
    demo.add_argument("--workdir", default=".drift_demo", help="wiped first (default .drift_demo)")
    demo.add_argument("--days", type=int, default=30, help="normal days (default 30)")
    demo.add_argument("--drift-days", type=int, default=2, help="drifted days (default 2)")
    demo.add_argument("--per-day", type=int, default=1200)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--scenario",
        default="utilization_spike",
        choices=["income_shock", "utilization_spike", "missing_bureau_fields"],
    )
    demo.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    demo.set_defaults(func=cmd_drift_demo)

    spec = sub.add_parser(
        "spec", help="validate a spec file, or draft one: spec init --from-files DIR"
    )
    spec.add_argument(
        "path", nargs="?", help="default: LENDING_PIPELINE_SPEC or shipped; `init` drafts one"
    )
    spec.add_argument("--from-files", help="init: the landing files to draft from")
    spec.add_argument("--output", default="spec.yaml", help="init: where to write the draft")
    spec.add_argument("--name", default="my_loan", help="init: the pipeline's name")
    spec.add_argument(
        "--data-dir",
        help="landed files to estimate the splits from; init: files globs relative to it",
    )
    spec.set_defaults(func=cmd_spec_check)
    add_serving_commands(sub)
    add_privacy_commands(sub)
    add_production_commands(sub)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        select_product(args.product)
        return args.func(args)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2


def run() -> None:
    """The console entry point: `main`, then the exit handlers, then `exit_now` (with Dagster,
    MLflow and scikit-learn loaded, the interpreter's teardown of every module takes about 3 s
    and does nothing a finished command needs)."""
    status = [1]  # an uncaught exception exits 1, as Python does
    atexit.register(lambda: exit_now(status[0]))  # registered first, so it runs last
    try:
        status[0] = main() or 0
    except SystemExit as stop:  # argparse's usage errors and --help
        status[0] = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        raise
    except KeyboardInterrupt:
        status[0] = 130
        raise
    sys.exit(status[0])


def exit_now(code: int) -> None:
    """Flush the log handlers and standard streams, then end the process with `code` without
    tearing the interpreter down."""
    logging.shutdown()  # its own exit handler was registered before `run`'s and would not run
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
