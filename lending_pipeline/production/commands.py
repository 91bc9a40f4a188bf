"""`lending-pipeline up | down | demo-prod`: the production profile (docs/deployment.md)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lending_pipeline.production import settings
from lending_pipeline.production.secrets import SECRETS_URL_ENV, SecretStoreError
from lending_pipeline.production.stack import Profile, ProfileError

AUDIT_WRITER_ENV = "LENDING_AUDIT_WRITER"
AUDIT_WRITER_DEFAULT = "lending_audit_writer"
AUDIT_WRITER_PASSWORD_ENV = "LENDING_AUDIT_WRITER_PASSWORD"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def _profile(args) -> Profile:
    root = Path(args.root).resolve()
    data_dir = Path(args.data_dir).resolve() if args.data_dir else root / "data"
    return Profile(root=root, data_dir=data_dir)


def _audit_url(urls: dict[str, str]) -> str:
    """The audit log's URL: `LENDING_AUDIT_URL` when set, else the profile's audit database,
    set up (table, append-only trigger, insert-only writer role) and written as that role."""
    from urllib.parse import quote, urlsplit, urlunsplit

    from lending_pipeline.ml import audit_pg

    given = os.environ.get("LENDING_AUDIT_URL")
    if given:
        return given
    role = os.environ.get(AUDIT_WRITER_ENV) or AUDIT_WRITER_DEFAULT
    password = os.environ.get(AUDIT_WRITER_PASSWORD_ENV) or None
    audit_pg.setup_postgres(urls["audit"], role, password)
    parts = urlsplit(urls["audit"])
    secret = f":{quote(password, safe='')}" if password else ""
    netloc = f"{role}{secret}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def environment(profile: Profile) -> dict[str, str]:
    """Check the services, create what is missing, and return the profile's environment."""
    from lending_pipeline.production import secrets, stack

    stored = secrets.read_secrets() if secrets.configured() else {}
    urls = settings.profile_urls()
    stack.check_broker(settings.celery_broker())
    stack.prepare_databases(urls)
    return {**stack.profile_environment(profile, urls, _audit_url(urls)), **stored}


def cmd_up(args) -> int:
    from lending_pipeline.production import stack

    profile = _profile(args)
    began = time.perf_counter()
    try:
        env = environment(profile)
        stack.write_instance(profile)
        commands = stack.programs(profile, settings.celery_workers(), _mlflow_backend())
        pid = stack.start(profile, commands, env)
        stack.wait_ready(profile, list(commands), timeout=args.timeout)
    except (ProfileError, SecretStoreError, ValueError) as exc:
        print(f"up refused: {exc}", file=sys.stderr)
        if stack.running_pid(profile):
            stack.stop(profile)
        return 1
    urls = settings.profile_urls()
    print(f"production profile up in {time.perf_counter() - began:.0f}s (supervisord {pid})")
    print(f"  Dagster UI      http://127.0.0.1:{stack.WEBSERVER_PORT}  (webserver + daemon)")
    print(f"  Dagster storage {settings.redacted(urls['dagster'])}")
    broker = settings.redacted(settings.celery_broker())
    print(f"  Celery workers  {settings.celery_workers()} on {broker}")
    mlflow_store = settings.redacted(urls["mlflow"])
    print(f"  MLflow server   http://127.0.0.1:{settings.MLFLOW_PORT}  (store {mlflow_store})")
    print(
        f"  scoring API     http://127.0.0.1:{stack.SCORING_PORT}  (serves the deployed champion)"
    )
    print(f"  audit log       {settings.redacted(env['LENDING_AUDIT_URL'])}")
    store = os.environ.get(SECRETS_URL_ENV)
    print(f"  secrets         {'secret store ' + store if store else 'environment / key files'}")
    print(f"  data dir        {profile.data_dir}")
    print(f"  logs            {profile.logs}/<program>.log")
    print("  stop it all with `make down`")
    return 0


def _mlflow_backend() -> str:
    return settings.sqlalchemy_url(settings.profile_urls()["mlflow"])


def cmd_down(args) -> int:
    from lending_pipeline.production import stack

    profile = _profile(args)
    try:
        pid = stack.stop(profile)
    except ProfileError as exc:
        print(f"down failed: {exc}", file=sys.stderr)
        return 1
    if pid is None:
        print(f"the production profile of {profile.root} is not running")
    else:
        print(f"stopped the production profile (supervisord {pid} and every program it ran)")
    return 0


def submit(client, job: str, tags: dict[str, str]) -> str:
    return client.submit_job_execution(job, run_config={}, tags=tags)


def wait_runs(instance, run_ids: list[str], timeout: float) -> dict[str, str]:
    """Wait until every run is finished; their statuses (a clear error on the timeout)."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        for run_id in run_ids:
            if statuses.get(run_id) not in TERMINAL:
                statuses[run_id] = instance.get_run_by_id(run_id).status.value
        if all(status in TERMINAL for status in statuses.values()):
            return statuses
        time.sleep(1)
    raise ProfileError(
        f"runs not finished after {timeout:.0f}s: "
        + ", ".join(f"{r} {s}" for r, s in statuses.items() if s not in TERMINAL)
    )


def cmd_demo_prod(args) -> int:
    from dagster_graphql import DagsterGraphQLClient

    from lending_pipeline.definitions import DAILY_JOB, TRAINING_JOB
    from lending_pipeline.production import stack
    from lending_pipeline.runs import (
        consecutive_chunks,
        default_days_per_run,
        landed_partitions,
        range_tags,
        warehouse_rows,
    )
    from lending_pipeline.spec import load_spec

    profile = _profile(args)
    if not stack.running_pid(profile):
        print("the production profile is not running: `make up` first", file=sys.stderr)
        return 1
    os.environ.update(environment(profile))
    import dagster as dg

    spec = load_spec(args.spec)
    if not (profile.data_dir / "landing").exists():
        from lending_pipeline.cli import main

        main(["generate", "--data-dir", str(profile.data_dir), "--days", str(args.days),
              "--per-day", str(args.per_day)])  # fmt: skip
    partitions = landed_partitions(spec, profile.data_dir)
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack.WEBSERVER_PORT)
    instance = dg.DagsterInstance.get()
    began = time.perf_counter()
    per_run = default_days_per_run(spec, profile.data_dir, partitions, settings.celery_workers())
    chunks = consecutive_chunks(partitions, per_run)
    runs = {submit(client, DAILY_JOB, range_tags(days)): days for days in chunks}
    print(
        f"submitted {len(runs)} runs of {DAILY_JOB} over {len(partitions)} days "
        f"(ranges of up to {per_run} days) to the run queue"
    )
    statuses = wait_runs(instance, list(runs), args.timeout)
    failed = sorted(day for r, s in statuses.items() if s != "SUCCESS" for day in runs[r])
    print(
        f"materialized {len(partitions)} partitions of '{spec.name}' in "
        f"{time.perf_counter() - began:.1f}s ({len(partitions) - len(failed)} succeeded, "
        f"{len(failed)} failed{': ' + ', '.join(failed[:5]) if failed else ''})"
    )
    rows = warehouse_rows(profile.data_dir, partitions)
    for source in spec.sources:
        print(
            f"  {source.name:<14} ingested {rows.get(f'raw_{source.name}', 0):>9,}  validated "
            f"{rows.get(f'validated_{source.name}', 0):>9,}  quarantined "
            f"{rows.get(f'quarantine_{source.name}', 0):>7,}"
        )
    print(f"  applicant_features rows: {rows.get('applicant_features', 0):,}")
    began = time.perf_counter()
    training = submit(client, TRAINING_JOB, {})
    status = wait_runs(instance, [training], args.timeout)[training]
    print(f"training run {training} {status} in {time.perf_counter() - began:.1f}s")
    lines, packaged = run_summary(instance, training)
    for line in lines:
        print(f"  {line}")
    if packaged:
        print(f"  scoring: {wait_served(profile, packaged, args.timeout)}")
    print(f"  MLflow: {os.environ['MLFLOW_TRACKING_URI']}; Dagster UI: http://127.0.0.1:3000")
    return 0 if not failed and status == "SUCCESS" else 1


def wait_served(profile: Profile, version: str, timeout: float) -> str:
    """Wait until the scoring service serves the model version; what it serves."""
    from lending_pipeline.production.stack import SCORING_PORT
    from lending_pipeline.serving.operations import active_version

    deadline = time.monotonic() + min(timeout, 300)
    while time.monotonic() < deadline:
        if active_version(profile.data_dir) == version:
            return f"serving model version {version} on http://127.0.0.1:{SCORING_PORT}"
        time.sleep(1)
    return f"not switched to version {version} yet: see {profile.data_dir}/serving/logs/"


def run_summary(instance, run_id: str) -> tuple[list[str], str | None]:
    """The gates of a training run (actual vs threshold), its failed steps and its outcome;
    and the model version it packaged for serving, if any."""
    import dagster as dg

    lines = []
    checks = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=1000
    ).records
    for record in checks:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        verdict = "pass" if evaluation.passed else "FAIL"
        lines.append(f"[{verdict}] {evaluation.description}")
    failures = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=100
    ).records
    for record in failures:
        event = record.event_log_entry.dagster_event
        error = event.step_failure_data.error
        message = error.message.strip().splitlines()[0] if error else "no message"
        lines.append(f"step {event.step_key} failed: {message}")
    materialized = {}
    for record in instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=1000
    ).records:
        event = record.event_log_entry.dagster_event
        materialized[event.step_key] = event.event_specific_data.materialization.metadata
    champion = materialized.get("champion_model")
    if champion:
        lines.append(f"promoted: champion is now version {champion['champion_version'].value}")
    else:
        lines.append("not promoted: the champion is unchanged")
    bento = materialized.get("scoring_bento")
    if not bento:
        return lines, None
    lines.append(f"packaged: bento {bento['bento_tag'].value}")
    return lines, str(bento["model_version"].value)


def add_commands(sub) -> None:
    def common(parser):
        parser.add_argument("--root", default=".prod", help="the profile's folder (default .prod)")
        parser.add_argument("--data-dir", help="default: <root>/data")

    up = sub.add_parser("up", help="start the production profile (supervisord, daemonized)")
    common(up)
    up.add_argument("--timeout", type=float, default=240, help="seconds to wait for readiness")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop exactly what `up` started")
    common(down)
    down.set_defaults(func=cmd_down)
    demo = sub.add_parser("demo-prod", help="the whole graph through the running profile")
    common(demo)
    demo.add_argument("--spec")
    demo.add_argument("--days", type=int, default=100)
    demo.add_argument("--per-day", type=int, default=1200)
    demo.add_argument("--timeout", type=float, default=3600, help="seconds per phase")
    demo.set_defaults(func=cmd_demo_prod)
