"""The daily job over several days in one run: each day stored, checked and recorded on its own
in Dagster, and a damaged day ends as if it had run alone while the other days materialize."""

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG as RANGE_END
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG as RANGE_START

from lending_pipeline.backfill import BACKFILL_ID_TAG
from lending_pipeline.defs.common import FEATURES, schema_check
from lending_pipeline.ml import corrupt
from lending_pipeline.ml.synth import partition_path
from lending_pipeline.runs import (
    SPLIT_TAG,
    consecutive_chunks,
    days_per_run,
    run_days,
    run_range_lean,
)
from lending_pipeline_tests.conftest import DAYS, day
from lending_pipeline_tests.defs.helpers import stored_rows

DAYS_ALL = [day(i) for i in range(DAYS)]


def latest_check(instance, key: dg.AssetCheckKey, partition: str):
    [record] = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, partition_filter=PartitionKeyFilter(key=partition)
    )
    return record


def test_one_run_over_days_records_each_day_on_its_own(data_dir, instance):
    run = run_range_lean(instance, DAYS_ALL)

    assert run.success and not run.problems
    [dagster_run] = instance.get_runs()
    assert (dagster_run.tags[RANGE_START], dagster_run.tags[RANGE_END]) == (day(0), day(DAYS - 1))
    for asset in (
        "raw_applications",
        "validated_bureau",
        "quarantine_income",
        "applicant_features",
    ):
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
        assert sorted(r.partition_key for r in records) == DAYS_ALL
        for record in records:  # each day's own row count, as stored
            metadata = record.asset_materialization.metadata
            assert metadata["dagster/row_count"].value == stored_rows(
                data_dir, asset, record.partition_key
            )
            assert record.partition_key in metadata["path"].value
    rows = [stored_rows(data_dir, "applicant_features", d) for d in DAYS_ALL]
    assert all(rows) and len(set(rows)) > 1  # the days differ: no day got another's figures
    check = schema_check("applications")
    for partition in DAYS_ALL:
        record = latest_check(instance, check, partition)
        evaluation = record.event.asset_check_evaluation
        assert evaluation.passed and evaluation.partition == partition
        assert partition in evaluation.description
        target = evaluation.target_materialization_data
        materialized = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=check.asset_key, asset_partitions=[partition]), limit=1
        ).records[0]
        assert target.storage_id == materialized.storage_id


def test_a_damaged_day_fails_alone_and_the_other_days_materialize(spec, data_dir, instance):
    path = partition_path(data_dir, spec.source_by_name["applications"], day(1))
    corrupt.corrupt(path, "out_of_range", "loan_amount")
    tags = {BACKFILL_ID_TAG: "testfill"}

    results = run_days(instance, DAYS_ALL, tags)

    assert [r.partition for r in results] == DAYS_ALL
    good, bad = [results[0], results[2]], results[1]
    assert all(r.success and not r.failed_checks for r in good)
    assert "validated_applications_schema" in bad.failed_checks
    line = next(p.line() for p in bad.problems if p.name == "validated_applications_schema")
    assert line.startswith(f"FAILED CHECK validated_applications_schema partition {day(1)}: ")
    assert "loan_amount" in line
    features = instance.fetch_materializations(FEATURES, limit=20).records
    assert {r.partition_key for r in features} == {day(0), day(2)}
    assert stored_rows(data_dir, "applicant_features", day(1)) is None
    failed = latest_check(instance, schema_check("applications"), day(1))
    assert not failed.event.asset_check_evaluation.passed
    for partition in (day(0), day(2)):
        assert latest_check(
            instance, schema_check("applications"), partition
        ).event.asset_check_evaluation.passed
    # the backfill holds the runs that decided each day; the split run is kept outside it
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: "testfill"}))
    assert sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in runs) == [
        (d, d) for d in DAYS_ALL
    ]
    [split] = instance.get_runs(filters=dg.RunsFilter(tags={SPLIT_TAG: "testfill"}))
    assert split.status == dg.DagsterRunStatus.FAILURE


def test_a_day_that_cannot_be_ingested_is_named_and_isolated(spec, data_dir, instance):
    partition_path(data_dir, spec.source_by_name["applications"], day(2)).unlink()

    results = run_days(instance, DAYS_ALL, {BACKFILL_ID_TAG: "testfill"})

    assert [r.success for r in results] == [True, True, False]
    [problem] = results[2].problems
    assert problem.kind == "refused" and problem.name == "raw_applications"
    assert problem.partition == day(2)
    assert {stored_rows(data_dir, "applicant_features", d) is not None for d in DAYS_ALL[:2]} == {
        True
    }
    # the first run covered all three days and named day 2; days 0-1 then ran as one range
    ranges = sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in instance.get_runs())
    assert ranges == [(day(0), day(1)), (day(0), day(2)), (day(2), day(2))]


def test_a_day_outside_a_backfill_runs_as_a_plain_partition(data_dir, instance):
    [result] = run_days(instance, [day(0)])

    assert result.success
    [dagster_run] = instance.get_runs()
    assert dagster_run.tags["dagster/partition"] == day(0) and RANGE_START not in dagster_run.tags


def test_days_are_cut_into_even_runs_of_consecutive_days():
    days = [f"2025-03-{d:02d}" for d in (1, 2, 3, 4, 6, 7)]
    assert consecutive_chunks(days, 3) == [days[:3], days[3:4], days[4:]]
    assert consecutive_chunks(days, 1) == [[d] for d in days]
    assert days_per_run(100, 2, 31) == 25  # 4 runs: two per worker
    assert days_per_run(4, 2, 31) == 2
    assert days_per_run(1, 2, 31) == 1
    assert days_per_run(30, 1, 31) == 30
    assert days_per_run(4, 2, 31, day_bytes=80e6) == 1  # big days: one per run (memory)
    assert days_per_run(100, 2, 31, day_bytes=4e6) == 13  # 16 days fit in 64 MB: 8 runs
