"""Validating several days at once gives each day the outcome of its own validation."""

import pandas as pd
import pytest

from lending_pipeline.defs.resources import arrow_to_pandas
from lending_pipeline.ml import corrupt
from lending_pipeline.ml.ingest import ingest
from lending_pipeline.ml.synth import partition_path
from lending_pipeline.ml.validation import validate_days, validate_source
from lending_pipeline_tests.conftest import DAYS, PII_KEY, day

DAYS_ALL = [day(i) for i in range(DAYS)]


def raws(spec, data_dir, name):
    source = spec.source_by_name[name]
    return {
        d: arrow_to_pandas(ingest(source, data_dir, d, PII_KEY.encode()).table) for d in DAYS_ALL
    }


def assert_same(one, many):
    assert one.valid.equals(many.valid)
    assert one.quarantine.equals(many.quarantine)
    assert one.rule_counts == many.rule_counts
    assert one.structural == many.structural and one.groups == many.groups
    assert one.passed == many.passed and one.failure_summary() == many.failure_summary()


@pytest.mark.parametrize(
    "kind, name, column",
    [
        ("out_of_range", "applications", "loan_amount"),
        ("duplicate_keys", "bureau", None),
        ("missing_column", "applications", "loan_amount"),
        ("wrong_dtype", "income", "stated_income"),
        ("non_utf8", "applications", None),
        ("truncated_csv", "bureau", None),
        ("empty_file", "income", None),
        ("all_null_column", "bureau", "oldest_account_months"),
    ],
)
def test_each_day_as_if_validated_alone(spec, data_dir, kind, name, column):
    source = spec.source_by_name[name]
    corrupt.corrupt(partition_path(data_dir, source, day(1)), kind, column)
    frames = raws(spec, data_dir, name)
    dated = name == spec.entity.source

    together = validate_days(frames, source, partition_dated=dated)

    assert list(together) == DAYS_ALL
    for d in DAYS_ALL:
        assert_same(validate_source(frames[d], source, d, partition_dated=dated), together[d])
    damaged = together[day(1)]
    assert not damaged.passed or damaged.quarantined_rows or damaged.input_rows == 0
    assert together[day(0)].quarantined_rows == 0


def test_a_key_seen_on_two_days_is_not_a_duplicate(spec, data_dir):
    source = spec.source_by_name["bureau"]
    frames = raws(spec, data_dir, "bureau")
    frames[day(1)] = pd.concat([frames[day(1)], frames[day(0)].head(3)], ignore_index=True)
    frames[day(2)] = pd.concat([frames[day(2)], frames[day(2)].head(2)], ignore_index=True)

    together = validate_days(frames, source)

    assert "unique_key" not in together[day(1)].rule_counts
    assert together[day(2)].rule_counts["unique_key"] == 4  # both copies of two rows
    for d in DAYS_ALL:
        assert_same(validate_source(frames[d], source, d), together[d])
