"""The MLflow tracking server (on PostgreSQL) stopped in the middle of training: the run fails
naming the server, the champion alias stays, and the MLflow run left open is closed once the
server is back."""

import time

import dagster as dg
from mlflow import MlflowClient

from lending_pipeline.definitions import build_definitions
from lending_pipeline.defs.resources import MlflowTracking
from lending_pipeline.ml import tracking
from lending_pipeline.production import settings
from lending_pipeline.runs import run_partition, run_training
from lending_pipeline.spec import load_spec
from lending_pipeline_tests.production.conftest import DAYS, TRAIN_CONFIG, day
from lending_pipeline_tests.production.services import (
    MlflowServer,
    database,
    production_env,
    start_in_fresh_process,
    train_by_reference,
)


def running_runs(client: MlflowClient, experiment: str):
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], filter_string="attributes.status = 'RUNNING'")


def test_tracking_server_stopped_mid_training(tmp_path, small_spec, landed, monkeypatch):
    spec = load_spec(small_spec)
    with database() as pg:
        production_env(monkeypatch, tmp_path, pg, broker=None)
        store = settings.with_database(pg, f"{settings.database_name(pg)}_mlflow")
        settings.ensure_database(store)
        server = MlflowServer(
            settings.sqlalchemy_url(store), tmp_path / "artifacts", tmp_path / "mlflow.log"
        )
        server.start()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        config = MlflowTracking().config(spec.name)
        client = MlflowClient(server.url)
        instance = dg.DagsterInstance.get()
        pool = None
        try:
            defs = build_definitions(spec)
            for offset in range(DAYS):
                assert run_partition(defs, instance, day(offset)).success
            assert run_training(defs, instance, TRAIN_CONFIG, package=False).success
            champion = tracking.alias_version(config, tracking.CHAMPION)
            assert champion is not None
            assert client.get_model_version(config.registered_model, champion).source

            pool, future = start_in_fresh_process(train_by_reference, TRAIN_CONFIG)
            deadline = time.monotonic() + 300
            while not running_runs(client, config.experiment):
                assert time.monotonic() < deadline, "the second training opened no MLflow run"
                assert not future.done(), future.result()
                time.sleep(0.05)
            orphan = running_runs(client, config.experiment)[0].info.run_id
            server.stop()
            failed = future.result(timeout=600)

            assert not failed.success
            assert failed.failed_steps == ["candidate_model"], failed.messages
            named = [m for m in failed.step_errors if server.url in m and "does not answer" in m]
            assert named, failed.step_errors
            assert instance.get_run_by_id(failed.run_id).status == dg.DagsterRunStatus.FAILURE

            server.start()
            assert tracking.alias_version(config, tracking.CHAMPION) == champion
            assert client.get_run(orphan).info.status == "RUNNING"  # nobody could close it
            assert run_training(defs, instance, TRAIN_CONFIG, package=False).success
            closed = client.get_run(orphan)
            assert closed.info.status == "FAILED"
            assert failed.run_id in closed.data.tags["lending_closed_reason"]
            assert not running_runs(client, config.experiment)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            server.stop()
            instance.dispose()
