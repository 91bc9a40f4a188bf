"""The production profile against the machine's PostgreSQL and RabbitMQ: runs on Celery workers
with PostgreSQL storage give the warehouse the in-process run gives."""

import shutil

import dagster as dg

from lending_pipeline.definitions import build_definitions
from lending_pipeline.ml.tracking import default_tracking_uri
from lending_pipeline.production.commands import run_summary
from lending_pipeline.runs import run_partition, run_partitions, run_training
from lending_pipeline.spec import load_spec
from lending_pipeline_tests.production.conftest import DAYS, TRAIN_CONFIG, day, warehouse_digests
from lending_pipeline_tests.production.services import (
    Worker,
    database,
    in_fresh_process,
    production_env,
    train_by_reference,
    vhost,
)


def ran_on_celery(instance, run_id: str) -> set[str]:
    """The steps of a run that a Celery worker executed (from the run's engine events)."""
    steps = set()
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        message = record.dagster_event.message or ""
        if message.endswith("in celery worker") and record.step_key:
            steps.add(record.step_key)
    return steps


def test_two_concurrent_partitions_and_training_on_celery_match_in_process(
    tmp_path, small_spec, landed, monkeypatch
):
    spec = load_spec(small_spec)
    setup_days = [day(i) for i in range(DAYS - 2)]
    last_days = [day(DAYS - 2), day(DAYS - 1)]
    with database() as pg, vhost() as broker:
        config_dir = production_env(monkeypatch, tmp_path, pg, broker)
        instance = dg.DagsterInstance.get()
        defs = build_definitions(spec)
        assert defs.resolve_job_def("daily_ingestion_job").executor_def.name == "celery"
        for partition in setup_days:  # the days before: in process, on the same instance
            assert run_partition(defs, instance, partition).success

        in_process = tmp_path / "in_process"
        shutil.copytree(landed, in_process)
        monkeypatch.setenv("LENDING_DATA_DIR", str(in_process))
        for partition in last_days:
            assert run_partition(defs, instance, partition).success
        baseline = run_training(defs, instance, TRAIN_CONFIG, package=False)
        assert baseline.success

        monkeypatch.setenv("LENDING_DATA_DIR", str(landed))
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI to the processes started later
        monkeypatch.setenv("MLFLOW_TRACKING_URI", default_tracking_uri(landed))
        workers = [Worker(f"w{i}", config_dir, tmp_path / f"w{i}.log") for i in (1, 2)]
        try:
            for started in workers:
                started.wait_ready()
            runs = list(run_partitions(str(small_spec), last_days, workers=2))
            assert [r.success for r in runs] == [True, True], [r.messages for r in runs]
            trained = in_fresh_process(train_by_reference, TRAIN_CONFIG)
            assert trained.success, trained.messages
        finally:
            for started in workers:
                started.stop()

        for run in [*runs, trained]:
            assert ran_on_celery(instance, run.run_id), f"run {run.run_id} ran no step on Celery"
        assert "candidate_model" in ran_on_celery(instance, trained.run_id)
        for run in [*runs, trained]:
            starts = [
                record.step_key
                for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
            ]
            assert len(starts) == len(set(starts)), f"a step ran twice: {sorted(starts)}"
        first, second = (instance.get_run_record_by_id(r.run_id) for r in runs)
        assert first.start_time < second.end_time and second.start_time < first.end_time
        lines, packaged = run_summary(instance, trained.run_id)  # what demo-prod prints
        assert packaged is None  # no Bento asked for
        assert any(line.startswith("[pass] ") for line in lines)
        assert lines[-1].startswith(("promoted: champion is now version", "not promoted"))
        celery, embedded = warehouse_digests(landed), warehouse_digests(in_process)
        assert any("training_set" in name for name in celery)
        assert celery == embedded
        instance.dispose()
