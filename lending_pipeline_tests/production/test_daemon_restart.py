"""`dagster-daemon` SIGKILLed while the drift sensor's run request is pending, on the production
instance (PostgreSQL storage, queued runs): once restarted, exactly one retraining run exists for
that drift's run key, and it is the run the killed tick had reserved.

The daemon is stopped at a chosen point by a table lock this test holds on the instance's own
database: with `runs` locked against writes the daemon hangs inserting the run (the request is
reserved in the tick, no run exists yet); with `event_logs` locked it hangs queueing the run
(the run exists, NOT_STARTED, the tick is not finished). It is killed there; once the server
has abandoned the dead client's statement the lock is released and a fresh daemon started.
The queue is held (at most 0 runs at once): the test is about the run records, not training.
"""

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from lending_pipeline.definitions import TRAINING_JOB, build_definitions
from lending_pipeline.defs.automation import DRIFT_SENSOR
from lending_pipeline.defs.monitoring import WITHIN_LIMITS
from lending_pipeline.ml.synth import generate_consumer_loans
from lending_pipeline.production import settings
from lending_pipeline.runs import run_monitoring, run_partition, run_training
from lending_pipeline.spec import default_spec_path, load_spec
from lending_pipeline_tests.conftest import PII_KEY
from lending_pipeline_tests.production.services import PG_ADMIN, PROJECT, database, production_env

START = dt.date(2025, 2, 3)
NORMAL_DAYS = 9  # the champion trains on days 0..6 (labels mature in 2 days, as of day 8)
PER_DAY = 500
DRIFTED = NORMAL_DAYS  # utilization_spike from this day on
RUN_KEY_TAG = "dagster/run_key"
WAIT = 180  # seconds: daemon start with its code server, one tick, on a busy 2-core machine


def day(offset: int) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


def drift_spec(path: Path) -> Path:
    data = yaml.safe_load(default_spec_path().read_text())
    data["target"]["maturity_days"] = 2
    data["model"]["split"] = {"validation_days": 2, "test_days": 2}
    data["model"]["params"]["max_iter"] = 80
    data["gates"].update(
        {"min_auc_margin_over_baseline": -0.1, "max_ece": 0.1, "min_adverse_impact_ratio": 0.5}
    )
    data["drift"].update({"min_rows": 200, "report_sample_rows": 1000})
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """A production instance (PostgreSQL) holding a champion and a drift report whose check
    failed at the retrain tier, kept as a template database each test copies; the data dir."""
    root = tmp_path_factory.mktemp("daemon")
    patch = pytest.MonkeyPatch()
    spec_path = drift_spec(root / "spec.yaml")
    spec = load_spec(spec_path)
    data = root / "data"
    future = dt.date(2025, 9, 1)
    generate_consumer_loans(
        spec, data, START, NORMAL_DAYS + 1, PER_DAY, seed=21, scenario="utilization_spike",
        scenario_start=START + dt.timedelta(days=DRIFTED), as_of=future,
    )  # fmt: skip
    for name, value in {
        "LENDING_PIPELINE_SPEC": str(spec_path),
        "LENDING_DATA_DIR": str(data),
        "LENDING_PII_KEY": PII_KEY,
    }.items():
        patch.setenv(name, value)
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        with database("lending_daemon_template") as template:
            production_env(patch, root, template, broker=None)
            instance = dg.DagsterInstance.get()
            defs = build_definitions(spec)
            for offset in range(NORMAL_DAYS + 1):
                assert run_partition(defs, instance, day(offset)).success
            as_of = day(NORMAL_DAYS - 1)
            ops = ("training_set", "candidate_model")
            config = {"ops": {name: {"config": {"as_of": as_of}} for name in ops}}
            training = run_training(defs, instance, config, package=False)
            assert training.success, [e.description for e in training.get_asset_check_evaluations()]
            report = run_monitoring(defs, instance, day(DRIFTED), evidently=False)
            (failed,) = [
                e for e in report.get_asset_check_evaluations()
                if e.check_name == WITHIN_LIMITS.name and not e.passed
            ]  # fmt: skip
            assert failed.severity == dg.AssetCheckSeverity.ERROR  # the retrain tier
            feature = failed.metadata["worst_feature"].value
            setup_runs = {r.run_id for r in instance.get_runs()}
            instance.dispose()
            yield {
                "template": settings.database_name(template),
                "run_key": f"drift:{day(DRIFTED)}:{feature}",
                "setup_runs": setup_runs,
                "root": root,
            }
    finally:
        patch.undo()


@contextlib.contextmanager
def copy_of(template: str):
    """A database copied from the template (PostgreSQL's CREATE DATABASE ... TEMPLATE); its URL."""
    with database("lending_daemon") as url:
        name = settings.database_name(url)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name}")
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        settings.ensure_database(url)  # the profile's database settings are not copied
        yield url


class Daemon:
    """`dagster-daemon run` on the project's workspace, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path):
        self.log = log
        command = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                   str(PROJECT / "workspace.yaml")]  # fmt: skip
        self.process = subprocess.Popen(
            command, env=env, cwd=PROJECT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def alive(self) -> None:
        assert self.process.poll() is None, f"daemon exited: {self.log.read_text()[-3000:]}"

    def kill(self) -> None:
        """SIGKILL the daemon and its code server (its whole process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


def wait_for(condition, what: str, daemon: Daemon, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if daemon is not None:
            daemon.alive()
        time.sleep(0.5)
    log = daemon.log.read_text()[-3000:] if daemon is not None else ""
    raise AssertionError(f"no {what} within {timeout} s: {log}")


def waiting_writes(locker: psycopg.Connection, table: str) -> list[int]:
    """The server processes waiting for a lock on `table` (writes to it). Read from pg_locks
    alone: pg_stat_activity is a snapshot kept for the rest of the locker's transaction."""
    rows = locker.execute(
        "SELECT pid FROM pg_locks WHERE NOT granted AND relation = %s::regclass"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (table,),
    ).fetchall()
    return [row[0] for row in rows]


def stuck_tick(instance, locker: psycopg.Connection, table: str, daemon: Daemon, hold=3.0):
    """The drift sensor's unfinished tick with a reserved run, once it has stayed so for `hold`
    seconds while a write to `table` waits: the daemon is stuck writing that run (other
    daemons' writes, e.g. freshness events, may wait there too)."""
    deadline, since = time.monotonic() + WAIT, None
    while time.monotonic() < deadline:
        daemon.alive()
        started = [t for t in drift_ticks(instance) if t.status == TickStatus.STARTED]
        tick = next((t for t in started if t.tick_data.reserved_run_ids), None)
        # past the run's creation exactly when the lock is on a later write than the run's own
        written = tick is not None and instance.get_run_by_id(tick.tick_data.reserved_run_ids[0])
        if (
            tick is not None
            and bool(written) == (table != "runs")
            and waiting_writes(locker, table)
        ):
            since = since or time.monotonic()
            if time.monotonic() - since >= hold:
                return tick
        else:
            since = None
        time.sleep(0.5)
    locker.execute("SELECT pg_stat_clear_snapshot()")
    sessions = locker.execute(
        "SELECT state, wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    ticks = [(t.status, t.tick_data.reserved_run_ids) for t in drift_ticks(instance)]
    raise AssertionError(
        f"no drift request stuck on {table}; ticks {ticks}; sessions {sessions}; "
        f"{daemon.log.read_text()[-3000:]}"
    )


def drift_state(instance: dg.DagsterInstance):
    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    return next((s for s in states if s.instigator_name == DRIFT_SENSOR), None)


def drift_ticks(instance: dg.DagsterInstance) -> list:
    state = drift_state(instance)
    if state is None:
        return []
    return list(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=20))


def keyed_runs(instance: dg.DagsterInstance, run_key: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key})))


@pytest.mark.parametrize(
    "table", ["runs", "event_logs"], ids=["before-the-run-is-created", "before-it-is-queued"]
)
def test_daemon_killed_with_a_pending_drift_request_makes_exactly_one_run(
    drifted, table, tmp_path, monkeypatch
):
    run_key = drifted["run_key"]
    with copy_of(drifted["template"]) as pg:
        production_env(monkeypatch, tmp_path, pg, broker=None)
        monkeypatch.setenv(settings.MAX_RUNS_ENV, "0")  # the queue holds every run
        # no freshness daemon: it writes to event_logs too, and its waiting writes would be taken
        # for the sensor's (the test is about the sensor's run request alone)
        config = tmp_path / "dagster_home" / "dagster.yaml"
        enabled = "freshness:\n  enabled: true"
        assert enabled in config.read_text()
        config.write_text(config.read_text().replace(enabled, "freshness:\n  enabled: false"))
        env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        instance = dg.DagsterInstance.get()
        locker = psycopg.connect(settings.with_database(PG_ADMIN, settings.database_name(pg)))
        daemons = []
        try:
            locker.execute("SET lock_timeout = '10s'")
            locker.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")  # reads go on, writes wait
            daemons.append(Daemon(env, tmp_path / "daemon-1.log"))
            pending = stuck_tick(instance, locker, table, daemons[0])
            reserved = [run_id for run_id, _ in pending.reserved_run_ids_with_requests]
            assert [r.run_key for _, r in pending.reserved_run_ids_with_requests] == [run_key]
            created = keyed_runs(instance, run_key)
            if table == "runs":
                assert created == []
            else:
                assert [(r.run_id, r.status) for r in created] == [
                    (reserved[0], dg.DagsterRunStatus.NOT_STARTED)
                ]
            daemons[0].kill()
            # the server abandons the dead client's statement (client_connection_check_interval,
            # set by the profile): released earlier, the lock would let it commit half a write
            wait_for(lambda: not waiting_writes(locker, table), "abandoned statements", None, 60)
            locker.rollback()

            daemons.append(Daemon(env, tmp_path / "daemon-2.log"))
            # the sensor's minimum interval (60 s) runs from the killed tick's start
            wait_for(
                lambda: all(t.status != TickStatus.STARTED for t in drift_ticks(instance)),
                "finished drift sensor tick after the restart",
                daemons[1],
                timeout=WAIT + 60,
            )
            wait_for(
                lambda: [r for r in keyed_runs(instance, run_key)
                         if r.status == dg.DagsterRunStatus.QUEUED],
                "queued retraining run",
                daemons[1],
            )  # fmt: skip
            # the tick is recorded finished before the sensor's state (its cursor) is written
            cursor = json.loads(
                wait_for(
                    lambda: drift_state(instance).instigator_data.cursor,
                    "drift sensor cursor after the resumed tick",
                    daemons[1],
                )
            )
        finally:
            for daemon in daemons:
                daemon.kill()
            locker.close()

        runs = keyed_runs(instance, run_key)
        assert [r.run_id for r in runs] == reserved  # the pending request, not a new one
        (run,) = runs
        assert run.status == dg.DagsterRunStatus.QUEUED
        assert run.job_name == TRAINING_JOB
        assert run.tags["lending/reason"] == "drift"
        assert run.tags["dagster/sensor_name"] == DRIFT_SENSOR
        new = [r for r in instance.get_runs() if r.run_id not in drifted["setup_runs"]]
        assert [r.run_id for r in new] == reserved  # no second run, tagged or not
        assert cursor["last_id"] > 0  # the drift event is consumed: later ticks skip it
        assert "resuming" in (tmp_path / "daemon-2.log").read_text()
        instance.dispose()
