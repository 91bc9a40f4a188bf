import datetime as dt

import pandas as pd
import pytest

from lending_pipeline.defs.resources import arrow_to_pandas
from lending_pipeline.ml import corrupt
from lending_pipeline.ml.ingest import INGEST_ERROR, IngestError, ingest
from lending_pipeline.ml.pii import is_pseudonym
from lending_pipeline.ml.synth import partition_path
from lending_pipeline.ml.validation import validate_source
from lending_pipeline_tests.conftest import PII_KEY, day

KEY = PII_KEY.encode()


def landing_rows(path) -> int:
    return sum(1 for line in path.read_bytes().split(b"\n")[1:] if line.strip())


def run(spec, data_dir, name, offset=0):
    source = spec.source_by_name[name]
    result = ingest(source, data_dir, day(offset), KEY)
    raw = arrow_to_pandas(result.table)
    outcome = validate_source(raw, source, day(offset), partition_dated=name == "applications")
    return result, outcome


def test_clean_partition_validates_every_row_and_pseudonymises_pii(spec, data_dir):
    result, outcome = run(spec, data_dir, "applications")
    path = partition_path(data_dir, spec.source_by_name["applications"], day())
    assert result.rows == landing_rows(path)
    assert outcome.passed and outcome.reconciled and outcome.quarantined_rows == 0
    for column in spec.source_by_name["applications"].pii_columns:
        assert all(is_pseudonym(v) for v in result.table[column].to_pylist())
    assert str(outcome.valid["loan_amount"].dtype) == "float64"
    assert str(outcome.valid["term_months"].dtype) == "Int64"
    assert str(outcome.valid["application_date"].dtype) == "datetime64[ns]"


@pytest.mark.parametrize(
    "kind, source, column, rule, structural",
    [
        ("wrong_dtype", "applications", "loan_amount", "dtype", False),
        ("negative_value", "income", "stated_income", "range", False),
        ("out_of_range", "applications", "loan_amount", "range", False),
        ("unknown_category", "applications", "purpose", "allowed_values", False),
        ("future_dates", "applications", "application_date", "not_in_future", False),
        ("all_null_column", "applications", "loan_amount", "not_null", False),
        ("missing_column", "applications", "loan_amount", "required_column", True),
        ("duplicate_keys", "applications", None, "unique_key", True),
        ("non_utf8", "applications", None, "encoding", True),
        ("truncated_csv", "applications", None, "row_format", True),
    ],
)
def test_each_rule_quarantines_without_losing_rows(
    spec, data_dir, kind, source, column, rule, structural
):
    path = partition_path(data_dir, spec.source_by_name[source], day())
    before = landing_rows(path)
    corrupt.corrupt(path, kind, column)
    result, outcome = run(spec, data_dir, source)
    assert result.rows == landing_rows(path) >= before
    assert outcome.reconciled
    assert not outcome.passed
    assert outcome.rule_counts.get(rule, 0) > 0
    assert any(rule in r for r in outcome.quarantine["_rule"])
    assert bool(outcome.structural) == structural
    if structural:
        assert str(path.relative_to(data_dir)) in outcome.failure_summary()


def test_empty_file_is_a_structural_failure(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["bureau"], day())
    corrupt.empty_file(path)
    result, outcome = run(spec, data_dir, "bureau")
    assert result.rows == 0 and not outcome.passed
    assert "no rows (rule: not_empty)" in outcome.failure_summary()


def test_malformed_rows_keep_their_line_and_fields(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["applications"], day())
    corrupt.truncated_csv(path)
    result, _ = run(spec, data_dir, "applications")
    table = arrow_to_pandas(result.table)
    bad = table[table[INGEST_ERROR].notna()]
    assert len(bad) == 1
    assert bad["_source_row"].iloc[0] == landing_rows(path) + 1
    assert bad["application_id"].iloc[0].startswith("A")
    assert is_pseudonym(bad["full_name"].iloc[0]) or pd.isna(bad["full_name"].iloc[0])


def test_undeclared_columns_are_dropped(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["income"], day())
    lines = path.read_text().splitlines()
    lines = [lines[0] + ',"employer_phone"'] + [line + ",555-0100" for line in lines[1:]]
    path.write_text("\n".join(lines) + "\n")
    result, outcome = run(spec, data_dir, "income")
    assert "employer_phone" not in result.table.column_names
    assert result.files[0].undeclared_columns == ["employer_phone"]
    assert outcome.passed


def test_row_in_the_wrong_partition_is_quarantined(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["applications"], day())
    text = path.read_text().replace(f'"{day()}"', f'"{day(1)}"', 3)
    path.write_text(text)
    _, outcome = run(spec, data_dir, "applications")
    assert outcome.rule_counts["in_partition"] == 3


def test_missing_file(spec, data_dir):
    partition_path(data_dir, spec.source_by_name["income"], day()).unlink()
    with pytest.raises(IngestError, match="no file matches 'landing/income/2025-03-03"):
        ingest(spec.source_by_name["income"], data_dir, day(), KEY)
    optional = spec.source_by_name["outcomes"]
    partition_path(data_dir, optional, day()).unlink()
    assert ingest(optional, data_dir, day(), KEY).rows == 0


def test_future_is_relative_to_today(spec, data_dir):
    source = spec.source_by_name["applications"]
    raw = arrow_to_pandas(ingest(source, data_dir, day(), KEY).table)
    outcome = validate_source(raw, source, day(), today=dt.date(2025, 3, 1))
    assert outcome.rule_counts["not_in_future"] == len(raw)
