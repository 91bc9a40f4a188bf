"""The daily job on a real Dagster instance: end to end, idempotent, blocking across runs."""

import hashlib

import pandas as pd

from lending_pipeline.defs.common import FEATURES
from lending_pipeline.ml import corrupt
from lending_pipeline.ml.synth import partition_path
from lending_pipeline_tests.conftest import day
from lending_pipeline_tests.defs.helpers import (
    features_materialized,
    landing_rows,
    run_day,
    run_selection,
    stored_rows,
)


def test_one_partition_end_to_end(spec, data_dir, instance):
    run = run_day(spec, instance, day())
    assert run.success and not run.failed_checks, run.messages
    apps = landing_rows(partition_path(data_dir, spec.source_by_name["applications"], day()))
    assert stored_rows(data_dir, "raw_applications", day()) == apps
    assert stored_rows(data_dir, "validated_applications", day()) == apps
    assert stored_rows(data_dir, "quarantine_applications", day()) == 0
    assert stored_rows(data_dir, "applicant_features", day()) == apps
    features = pd.read_parquet(data_dir / "warehouse" / "applicant_features" / f"{day()}.parquet")
    assert set(spec.features.model_inputs) <= set(features.columns)
    assert features_materialized(instance, day())


def test_check_metadata_is_actionable(spec, data_dir, instance):
    run_day(spec, instance, day())
    defs_checks = [
        ("validated_applications", "validated_applications_schema"),
        ("validated_bureau", "validated_bureau_expectations"),
        ("applicant_features", "applicant_features_freshness"),
    ]
    import dagster as dg

    for asset, name in defs_checks:
        key = dg.AssetCheckKey(dg.AssetKey(asset), name)
        record = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.passed, name
        assert record.partition == day()
        metadata = evaluation.metadata
        assert "runbook" in metadata and "docs/runbook.md#" in metadata["runbook"].value
        assert evaluation.description


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rematerializing_a_partition_replaces_only_that_partition(spec, data_dir, instance):
    for offset in (0, 1):
        assert run_day(spec, instance, day(offset)).success
    warehouse = data_dir / "warehouse"
    others = {p: digest(p) for p in warehouse.rglob(f"{day(0)}.parquet")}
    mtimes = {p: p.stat().st_mtime_ns for p in others}
    before = {p: pd.read_parquet(p) for p in warehouse.rglob(f"{day(1)}.parquet")}
    assert len(others) == len(before) == 3 * len(spec.sources) + 1

    assert run_day(spec, instance, day(1)).success
    assert {p: digest(p) for p in others} == others
    assert {p: p.stat().st_mtime_ns for p in others} == mtimes
    for path, frame in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), frame)
    assert not list(warehouse.rglob("*.tmp"))


def test_blocking_holds_across_runs(spec, data_dir, instance):
    path = partition_path(data_dir, spec.source_by_name["applications"], day())
    original = path.read_bytes()
    corrupt.wrong_dtype(path, "loan_amount")
    run = run_day(spec, instance, day())
    assert not run.success and "validated_applications_schema" in run.failed_checks
    assert not features_materialized(instance, day())

    later = run_selection(spec, instance, day(), [FEATURES])
    assert not later.success
    failure = next(e for e in later.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "validated_applications_schema" in message and day() in message
    assert not features_materialized(instance, day())

    path.write_bytes(original)
    assert run_day(spec, instance, day()).success
    assert run_selection(spec, instance, day(), [FEATURES]).success
    assert features_materialized(instance, day())


def test_missing_landing_file_fails_ingestion_loudly(spec, data_dir, instance):
    partition_path(data_dir, spec.source_by_name["income"], day()).unlink()
    run = run_day(spec, instance, day())
    assert not run.success
    assert "raw_income" in run.failed_steps
    assert any("no file matches 'landing/income/2025-03-03*.csv'" in m for m in run.messages)
    assert not features_materialized(instance, day())
