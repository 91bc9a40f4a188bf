"""No raw PII value from the generated data appears past ingestion, in any form we store."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lending_pipeline.ml.synth import partition_path
from lending_pipeline_tests.conftest import day
from lending_pipeline_tests.defs.helpers import run_day


def raw_pii_values(spec, data_dir) -> set[str]:
    source = spec.source_by_name["applications"]
    frame = pd.read_csv(partition_path(data_dir, source, day()), dtype=str)
    values = set()
    for column in source.pii_columns:
        values |= set(frame[column].dropna())
    return values


def parquet_strings(path) -> set[str]:
    table = pq.read_table(path)
    out = set()
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            out |= {v for v in column.to_pylist() if v is not None}
    return out


def test_no_raw_pii_past_ingestion(spec, data_dir, instance, tmp_path):
    pii = raw_pii_values(spec, data_dir)
    assert len(pii) > 500
    run = run_day(spec, instance, day())
    assert run.success, run.messages

    stored = [p for p in data_dir.rglob("*") if p.is_file() and "landing" not in p.parts]
    assert any(p.suffix == ".parquet" for p in stored)
    for path in stored:
        found = parquet_strings(path) & pii if path.suffix == ".parquet" else set()
        data = path.read_bytes()
        found |= {v for v in pii if v.encode() in data}
        assert not found, f"raw PII in {path}"

    home = tmp_path / "dagster_home"
    instance_files = [p for p in home.rglob("*") if p.is_file()]
    assert instance_files
    for path in instance_files:
        data = path.read_bytes()
        assert not [v for v in pii if v.encode() in data], f"raw PII in {path}"

    events = instance.all_logs(run.run_id)
    text = " ".join(str(e) for e in events)
    assert "validated_applications_schema" in text
    assert not [v for v in pii if v in text]
