"""Typed metadata: tables with schemas, row counts, column schemas, rounded numbers, links."""

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from lending_pipeline.defs.common import validated_key
from lending_pipeline.defs.metadata import counts_table, frame_table, rounded
from lending_pipeline.ml import corrupt
from lending_pipeline.ml.synth import partition_path
from lending_pipeline_tests.conftest import day
from lending_pipeline_tests.defs.helpers import run_day


def test_frame_table_types_columns_and_rounds_floats():
    frame = pd.DataFrame(
        {
            "name": ["a", None],
            "n": [1, 2],
            "share": [0.8262443842048109, np.nan],
            "ok": [True, False],
        }
    )
    value = frame_table(frame)
    assert isinstance(value, dg.TableMetadataValue)
    types = {c.name: c.type for c in value.schema.columns}
    assert types == {"name": "string", "n": "int", "share": "float", "ok": "bool"}
    rows = [r.data for r in value.records]
    assert rows[0] == {"name": "a", "n": 1, "share": 0.8262, "ok": True}
    assert rows[1]["name"] is None and rows[1]["share"] is None
    assert rounded(float("nan")) is None and rounded(1 / 3) == 0.3333


def test_counts_table_is_typed():
    value = counts_table({"range": 13, "dtype": 2})
    assert [r.data for r in value.records] == [
        {"rule": "dtype", "rows": 2},
        {"rule": "range", "rows": 13},
    ]


def latest_materialization(instance, key: dg.AssetKey):
    return instance.fetch_materializations(key, limit=1).records[0].asset_materialization


def test_stored_assets_carry_row_count_and_column_schema(spec, data_dir, instance):
    assert run_day(spec, instance, day()).success
    for key in (validated_key("applications"), dg.AssetKey("applicant_features")):
        metadata = latest_materialization(instance, key).metadata
        path = data_dir / "warehouse" / key.path[-1] / f"{day()}.parquet"
        stored = pq.read_schema(path)
        assert metadata["dagster/row_count"].value == pq.ParquetFile(path).metadata.num_rows
        columns = metadata["dagster/column_schema"].schema.columns
        assert [c.name for c in columns] == stored.names
        assert metadata["path"].value == str(path)


def test_a_passed_check_links_its_runbook_entry_without_quoting_it(spec, data_dir, instance):
    assert run_day(spec, instance, day()).success
    key = dg.AssetCheckKey(validated_key("applications"), "validated_applications_schema")
    record = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.passed
    assert evaluation.metadata["runbook"].value.endswith("#validated_source_schema")
    assert "runbook_entry" not in evaluation.metadata


def test_failed_check_metadata_is_typed_and_masked(spec, data_dir, instance):
    path = partition_path(data_dir, spec.source_by_name["applications"], day())
    corrupt.corrupt(path, "out_of_range", "loan_amount")
    run = run_day(spec, instance, day())
    assert "validated_applications_schema" in run.failed_checks
    key = dg.AssetCheckKey(validated_key("applications"), "validated_applications_schema")
    record = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
    metadata = record.event.dagster_event.event_specific_data.metadata
    by_rule = {r.data["rule"]: r.data["rows"] for r in metadata["by_rule"].records}
    assert by_rule["range"] == metadata["quarantined_rows"].value > 0
    sample = [r.data for r in metadata["sample_failing_rows"].records]
    assert sample and all(row["rule"] == "range" for row in sample)
    assert {row["column"] for row in sample} == {"loan_amount"}
    pii = set(spec.source_by_name["applications"].pii_columns)
    assert pii and not pii & set(sample[0])
    assert set(sample[0]) == {"application_id", "file", "row", "rule", "column", "value", "detail"}
    assert metadata["runbook"].value.startswith("http://127.0.0.1:")
    assert "**What to do.**" in metadata["runbook_entry"].value
