"""The production profile's configuration: URLs, executor choice, supervisord programs."""

import configparser

import pytest

from lending_pipeline.definitions import build_definitions
from lending_pipeline.production import settings, stack


def test_urls_derive_from_one_postgres_url():
    urls = settings.profile_urls("postgresql://app:s3cret@db:5433/lending")
    assert urls == {
        "dagster": "postgresql://app:s3cret@db:5433/lending",
        "mlflow": "postgresql://app:s3cret@db:5433/lending_mlflow",
        "audit": "postgresql://app:s3cret@db:5433/lending_audit",
    }
    assert settings.sqlalchemy_url(urls["mlflow"]).startswith("postgresql+psycopg2://app:")
    assert settings.redacted(urls["dagster"]) == "postgresql://app:***@db:5433/lending"
    with pytest.raises(ValueError, match="LENDING_PG_URL.*mysql"):
        settings.sqlalchemy_url("mysql://db/lending")
    with pytest.raises(ValueError, match="names no database"):
        settings.profile_urls("postgresql://db:5432")


def test_executor_is_chosen_by_configuration(monkeypatch, spec):
    monkeypatch.delenv(settings.EXECUTOR_ENV, raising=False)
    job = build_definitions(spec).resolve_job_def("daily_ingestion_job")
    assert job.executor_def.name == "in_process"

    monkeypatch.setenv(settings.EXECUTOR_ENV, "celery")
    monkeypatch.setenv(settings.CELERY_BROKER_ENV, "amqp://guest:guest@127.0.0.1:5672/x")
    job = build_definitions(spec).resolve_job_def("training_job")
    assert job.executor_def.name == "celery"
    assert job.tags["lending/training"] == "true"

    monkeypatch.setenv(settings.EXECUTOR_ENV, "dask")
    with pytest.raises(ValueError, match="LENDING_EXECUTOR='dask'"):
        build_definitions(spec)


def test_workers_acknowledge_late_and_the_count_is_checked(monkeypatch, tmp_path):
    from lending_pipeline.production import worker

    folder = worker.write_config(tmp_path / "celery", "amqp://u:p@h:5672/v", "rpc://")
    module = (folder / "dagster_celery_config.py").read_text()
    assert "task_acks_late = True" in module and "task_reject_on_worker_lost = True" in module
    assert oct((folder / "dagster_celery_config.py").stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv(settings.CELERY_WORKERS_ENV, "0")
    with pytest.raises(ValueError, match="LENDING_CELERY_WORKERS"):
        settings.celery_workers()


def test_supervisord_runs_every_program_in_its_own_group(tmp_path):
    profile = stack.Profile(root=tmp_path, data_dir=tmp_path / "data")
    commands = stack.programs(profile, 3, "postgresql+psycopg2://postgres@127.0.0.1/x_mlflow")
    parser = configparser.RawConfigParser()
    parser.read_string(stack.render_config(profile, commands))
    names = [s.removeprefix("program:") for s in parser.sections() if s.startswith("program:")]
    assert names == ["mlflow", "webserver", "daemon", "worker_1", "worker_2", "worker_3", "scoring"]
    for name in names:
        section = parser[f"program:{name}"]
        assert section["stopasgroup"] == section["killasgroup"] == "true"
        assert section["stdout_logfile"] == str(tmp_path / "logs" / f"{name}.log")
    assert "--pool solo" in parser["program:worker_2"]["command"]
    assert "--port 5000" in parser["program:mlflow"]["command"]
    assert parser["supervisord"]["pidfile"] == str(tmp_path / "run" / "supervisord.pid")


def test_down_stops_exactly_what_up_started(tmp_path):
    """supervisord daemonized with two programs (one with a child of its own): stopping the
    profile ends all of them, and a process started beside it is left alone."""
    import subprocess
    import sys
    import time

    import psutil

    profile = stack.Profile(root=tmp_path / "prod", data_dir=tmp_path / "data")
    spawner = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    commands = {"spawner": [sys.executable, "-c", spawner], "sleeper": ["sleep", "300"]}
    beside = subprocess.Popen(["sleep", "300"])
    try:
        pid = stack.start(profile, commands, {}, ports=())
        deadline = time.monotonic() + 30
        while len(psutil.Process(pid).children(recursive=True)) < 3:
            assert time.monotonic() < deadline, "the programs did not start"
            time.sleep(0.2)
        started = psutil.Process(pid).children(recursive=True)
        with pytest.raises(stack.ProfileError, match="already running"):
            stack.start(profile, commands, {}, ports=())

        assert stack.stop(profile) == pid
        gone, alive = psutil.wait_procs([psutil.Process(pid), *started], timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert beside.poll() is None
        assert stack.stop(profile) is None
        assert (profile.logs / "sleeper.log").exists()
    finally:
        beside.kill()
        beside.wait()
        if stack.running_pid(profile):
            stack.stop(profile)


def test_profile_databases_abandon_statements_of_clients_that_are_gone():
    """A database the profile creates, or finds, checks each second that a client running a
    statement is still connected (see test_daemon_restart.py for why)."""
    import psycopg

    from lending_pipeline_tests.production.services import database

    with database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {settings.database_name(url)} RESET ALL")
        assert settings.ensure_database(url) is False  # found, and configured again
        with psycopg.connect(url) as conn:
            value = conn.execute("SHOW client_connection_check_interval").fetchone()[0]
        assert value == settings.CLIENT_CHECK_INTERVAL
