"""A Celery worker SIGKILLed in the middle of a step: the step goes back to the queue (late
acknowledgement), another worker runs it, the run ends, and every partition is whole."""

import datetime as dt
import time

import dagster as dg
import pyarrow.parquet as pq

from lending_pipeline.ml.synth import generate_consumer_loans, partition_path
from lending_pipeline.spec import load_spec
from lending_pipeline_tests.defs.helpers import landing_rows
from lending_pipeline_tests.production.conftest import START
from lending_pipeline_tests.production.services import (
    Worker,
    daily_by_reference,
    database,
    production_env,
    start_in_fresh_process,
    vhost,
)

TARGET = "validate_applications"  # the slowest step of the daily job
BIG_DAY = 20_000


def step_events(instance, run_id: str, step: str) -> list[str]:
    return [
        record.dagster_event.event_type_value
        for record in instance.all_logs(run_id)
        if record.dagster_event and record.step_key == step
    ]


def wait_for_step_running(instance, step: str, timeout: float = 300) -> str:
    """Wait until `step` of the newest run has started and not yet ended; the run id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(limit=1)
        if runs:
            events = step_events(instance, runs[0].run_id, step)
            if "STEP_START" in events:
                assert not {"STEP_SUCCESS", "STEP_FAILURE"} & set(events), "step ended too soon"
                return runs[0].run_id
        time.sleep(0.05)
    raise AssertionError(f"step {step} did not start within {timeout}s")


def test_worker_killed_mid_step_the_step_is_redelivered_and_partitions_are_whole(
    tmp_path, small_spec, monkeypatch
):
    data = tmp_path / "data"
    spec = load_spec(small_spec)
    generate_consumer_loans(spec, data, START, 1, BIG_DAY, seed=9, as_of=dt.date(2025, 9, 1))
    monkeypatch.setenv("LENDING_DATA_DIR", str(data))
    monkeypatch.setenv("LENDING_PII_KEY", "test-key-0123456789abcdef")
    partition = START.isoformat()
    with database() as pg, vhost() as broker:
        config_dir = production_env(monkeypatch, tmp_path, pg, broker)
        instance = dg.DagsterInstance.get()
        first = Worker("first", config_dir, tmp_path / "first.log")
        second = None
        pool, future = None, None
        try:
            first.wait_ready()
            pool, future = start_in_fresh_process(daily_by_reference, partition)
            run_id = wait_for_step_running(instance, TARGET)
            first.kill()
            assert "STEP_SUCCESS" not in step_events(instance, run_id, TARGET)
            second = Worker("second", config_dir, tmp_path / "second.log")
            second.wait_ready()
            result = future.result(timeout=600)
        finally:
            for started in (first, second):
                if started is not None:
                    started.stop()
            if pool is not None:
                pool.shutdown(cancel_futures=True)

        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS, result.messages
        events = step_events(instance, run_id, TARGET)
        assert events.count("STEP_START") == 2, events  # the killed attempt and the redelivery
        assert events.count("STEP_SUCCESS") == 1, events
        assert "second@" in (tmp_path / "second.log").read_text()
        warehouse = data / "warehouse"
        for source in spec.sources:
            landed = landing_rows(partition_path(data, source, partition))
            raw = pq.ParquetFile(warehouse / f"raw_{source.name}" / f"{partition}.parquet")
            valid = pq.read_table(warehouse / f"validated_{source.name}" / f"{partition}.parquet")
            held = pq.read_table(warehouse / f"quarantine_{source.name}" / f"{partition}.parquet")
            assert raw.metadata.num_rows == landed
            assert valid.num_rows + held.num_rows == landed, source.name
        features = pq.ParquetFile(warehouse / "applicant_features" / f"{partition}.parquet")
        applications = spec.source_by_name[spec.entity.source]
        assert features.metadata.num_rows == landing_rows(
            partition_path(data, applications, partition)
        )
        instance.dispose()
