"""Damaged landing files: each is refused or quarantined by its root cause, named by file,
column and rule, and counted once; nothing crashes and no row is lost."""

import datetime as dt
import os

import pandas as pd
import pytest

from lending_pipeline.defs.resources import arrow_to_pandas
from lending_pipeline.ml import corrupt
from lending_pipeline.ml.expectations import NO_ROWS, run_expectations
from lending_pipeline.ml.ingest import ingest
from lending_pipeline.ml.synth import partition_path
from lending_pipeline.ml.validation import validate_source
from lending_pipeline.spec import ColumnSpec, date_bounds, load_spec
from lending_pipeline_tests.conftest import PII_KEY, day

KEY = PII_KEY.encode()


def run(spec, data_dir, name):
    source = spec.source_by_name[name]
    result = ingest(source, data_dir, day(), KEY)
    raw = arrow_to_pandas(result.table)
    outcome = validate_source(raw, source, day(), partition_dated=name == spec.entity.source)
    assert outcome.reconciled
    return result, outcome


def lines_of(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(path, lines) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("damage", ["missing_column", "renamed_column", "empty", "header_only"])
def test_zero_valid_rows_do_not_crash_the_expectations(spec, data_dir, damage):
    source = spec.source_by_name["bureau"]
    path = partition_path(data_dir, source, day())
    if damage == "missing_column":
        corrupt.missing_column(path, "tradeline_count")
    elif damage == "renamed_column":
        path.write_text(path.read_text().replace('"tradeline_count"', '"tradelines"', 1))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        write_lines(path, lines_of(path)[:1])
    _, outcome = run(spec, data_dir, "bureau")
    assert outcome.valid.empty and not outcome.passed
    outcomes = run_expectations(outcome.valid, source.expectations, "bureau_zero_rows")
    assert len(outcomes) == len(source.expectations)
    assert all(not o.success and o.observed == NO_ROWS for o in outcomes)
    if damage in ("missing_column", "renamed_column"):
        assert "column 'tradeline_count'" in outcome.failure_summary()
        assert outcome.rule_counts == {"required_column": outcome.input_rows}


def test_random_bytes_are_refused_naming_the_file(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["bureau"], day())
    path.write_bytes(os.urandom(3000) + b"\x00" + os.urandom(3000))
    _, outcome = run(spec, data_dir, "bureau")
    assert not outcome.passed
    assert set(outcome.rule_counts) == {"binary"}
    summary = outcome.failure_summary()
    assert "file 'landing/bureau/2025-03-03.csv'" in summary and "NUL bytes" in summary


def test_bare_carriage_return_in_the_header_names_the_file(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["bureau"], day())
    path.write_bytes(path.read_bytes().replace(b",", b",\r", 1))
    _, outcome = run(spec, data_dir, "bureau")
    assert not outcome.passed and set(outcome.rule_counts) == {"line_endings"}
    assert "file 'landing/bureau/2025-03-03.csv'" in outcome.failure_summary()
    assert "carriage return" in outcome.failure_summary()


def test_a_repeated_header_line_fails_the_file(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["bureau"], day())
    lines = lines_of(path)
    write_lines(path, lines[:40] + [lines[0]] + lines[40:])
    _, outcome = run(spec, data_dir, "bureau")
    assert outcome.quarantine_share < outcome.max_share  # one row: under the share, yet
    assert not outcome.passed
    assert outcome.rule_counts == {"repeated_header": 1}
    assert outcome.quarantine["_source_row"].tolist() == [41]
    assert "rule repeated_header" in outcome.failure_summary()


@pytest.mark.parametrize("value", ["1899-12-31", "0001-01-01", "1950-06-01"])
def test_ancient_dates_in_any_date_column_are_quarantined(spec, data_dir, value):
    source = spec.source_by_name["bureau"]
    path = partition_path(data_dir, source, day())
    lines = lines_of(path)
    row = lines[1].split(",")
    row[1] = f'"{value}"'
    write_lines(path, [lines[0], ",".join(row), *lines[2:]])
    _, outcome = run(spec, data_dir, "bureau")
    assert outcome.quarantined_rows == 1
    rule = outcome.quarantine["_rule"].iloc[0]
    assert rule in ("date_range", "dtype"), rule
    assert "pull_date" in outcome.quarantine["_detail"].iloc[0]


def test_every_date_column_of_both_shipped_specs_has_bounds(spec):
    from lending_pipeline_tests.test_second_spec import SME

    today = dt.date(2026, 1, 1)
    for each in (spec, load_spec(SME)):
        for source in each.sources:
            for name, column in source.columns.items():
                if column.dtype != "date":
                    continue
                earliest, latest = date_bounds(column, today)
                assert column.earliest is not None, (source.name, name)
                assert dt.date(1990, 1, 1) <= earliest < latest <= today, (source.name, name)


def test_date_bounds_defaults_and_spec_errors():
    today = dt.date(2026, 1, 1)
    assert date_bounds(ColumnSpec(dtype="date"), today) == (dt.date(1900, 1, 1), today)
    late = ColumnSpec(dtype="date", earliest="2020-01-01", latest="2030-01-01")
    assert date_bounds(late, today) == (dt.date(2020, 1, 1), today)
    with pytest.raises(ValueError, match="earliest/latest apply to date columns"):
        ColumnSpec(dtype="int", earliest="2020-01-01")
    with pytest.raises(ValueError, match="is after latest"):
        ColumnSpec(dtype="date", earliest="2020-01-01", latest="2019-01-01")


@pytest.mark.parametrize("delimiter, word", [(";", "semicolons"), ("\t", "tabs"), ("|", "pipes")])
def test_a_wrong_delimiter_is_named(spec, data_dir, delimiter, word):
    path = partition_path(data_dir, spec.source_by_name["bureau"], day())
    frame = pd.read_csv(path, dtype=str)
    frame.to_csv(path, sep=delimiter, index=False)
    _, outcome = run(spec, data_dir, "bureau")
    assert outcome.rule_counts == {"delimiter": outcome.input_rows}
    summary = outcome.failure_summary()
    assert f"separated by {word}" in summary and "landing/bureau/2025-03-03.csv" in summary
    assert "missing" not in summary and "not_null" not in summary


def test_row_failures_are_counted_once_per_root_cause_and_named(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["bureau"], day())
    lines = lines_of(path)
    for i in range(1, 5):
        row = lines[i].split(",")
        row[2] = "twelve"  # tradeline_count: text in an int column
        lines[i] = ",".join(row)
    write_lines(path, lines)
    _, outcome = run(spec, data_dir, "bureau")
    assert outcome.rule_counts == {"dtype": 4}
    summary = outcome.failure_summary()
    assert "rows by rule: dtype: 4" in summary
    assert (
        "file 'landing/bureau/2025-03-03.csv', column 'tradeline_count', rule dtype: 4 row(s) "
        "at line(s) 2, 3, 4, 5" in summary
    )


def test_source_lines_are_true_after_a_quoted_newline(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["applications"], day())
    lines = lines_of(path)
    lines[2] = lines[2].replace("Street, ", "Street,\nFlat 2, ", 1)  # inside a quoted field
    lines[9] = lines[9].replace(",60,", ",61,").replace(",12,", ",13,").replace(",24,", ",25,")
    lines[9] = lines[9].replace(",36,", ",37,").replace(",48,", ",49,")
    write_lines(path, lines)
    physical = path.read_text().splitlines()
    _, outcome = run(spec, data_dir, "applications")
    assert outcome.quarantined_rows == 1
    line = int(outcome.quarantine["_source_row"].iloc[0])
    key = outcome.quarantine["application_id"].iloc[0]
    assert physical[line - 1].startswith(f'"{key}"')
    assert line == 11  # record 9 starts on line 11: the quoted newline adds one


def test_duplicate_keys_are_counted_once(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["bureau"], day())
    lines = lines_of(path)
    write_lines(path, lines + lines[1:7])
    _, outcome = run(spec, data_dir, "bureau")
    assert outcome.rule_counts == {"unique_key": 12}  # six keys, each on two rows
    assert len(outcome.structural) == 1  # reported once, not once per key column
    assert "rule unique_key: 12 row(s)" in outcome.structural[0]
    assert "rows by rule: unique_key: 12" in outcome.failure_summary()


def test_free_text_rules(spec, data_dir):
    path = partition_path(data_dir, spec.source_by_name["income"], day())
    lines = lines_of(path)
    ids = [lines[i].split(",", 1)[0].strip('"') for i in (1, 2, 3)]
    lines[1] = lines[1].replace(f'"{ids[0]}"', '"=HYPERLINK(""http://x"")"', 1)
    lines[2] = lines[2].replace(f'"{ids[1]}"', f'"{ids[1]}\x07"', 1)
    lines[3] = lines[3].replace(f'"{ids[2]}"', f'"{"A" * 300}"', 1)
    write_lines(path, lines)
    _, outcome = run(spec, data_dir, "income")
    assert outcome.rule_counts == {"text_content": 2, "max_length": 1}
    assert sorted(outcome.quarantine["_source_row"]) == [2, 3, 4]
