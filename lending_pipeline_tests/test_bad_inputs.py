"""Twelve kinds of bad input: the named check fails clearly, nothing downstream, no row lost."""

import pytest
import yaml

from lending_pipeline.definitions import build_definitions
from lending_pipeline.ml import corrupt
from lending_pipeline.ml.synth import partition_path
from lending_pipeline.spec import SpecError, default_spec_path, load_spec
from lending_pipeline_tests.conftest import day
from lending_pipeline_tests.defs.helpers import (
    features_materialized,
    landing_rows,
    run_day,
    stored_rows,
)

# kind: (source, column, failing check, words the check's message must contain)
CASES = {
    "missing_column": (
        "applications",
        "loan_amount",
        "validated_applications_schema",
        ["landing/applications/", "column 'loan_amount'", "required_column"],
    ),
    "wrong_dtype": (
        "applications",
        "term_months",
        "validated_applications_schema",
        ["exceeds max_quarantine_share", "dtype"],
    ),
    "negative_value": (
        "income",
        "stated_income",
        "validated_income_schema",
        ["exceeds max_quarantine_share", "range"],
    ),
    "duplicate_keys": (
        "applications",
        None,
        "validated_applications_schema",
        ["landing/applications/", "unique_key", "application_id"],
    ),
    "empty_file": (
        "bureau",
        None,
        "validated_bureau_schema",
        ["landing/bureau/", "no rows (rule: not_empty)"],
    ),
    "truncated_csv": (
        "income",
        None,
        "validated_income_schema",
        ["landing/income/", "row_format"],
    ),
    "non_utf8": (
        "applications",
        None,
        "validated_applications_schema",
        ["landing/applications/", "encoding: invalid UTF-8"],
    ),
    "future_dates": (
        "applications",
        "application_date",
        "validated_applications_schema",
        ["not_in_future", "in_partition"],
    ),
    "all_null_column": (
        "bureau",
        "revolving_balance",
        "validated_bureau_expectations",
        ["expect_column_values_to_not_be_null on revolving_balance: FAILED", "100.00%"],
    ),
    "out_of_range": (
        "applications",
        "loan_amount",
        "validated_applications_schema",
        ["range"],
    ),
    "unknown_category": (
        "applications",
        "purpose",
        "validated_applications_schema",
        ["allowed_values"],
    ),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_input_fails_the_named_check_and_loses_nothing(spec, data_dir, instance, kind):
    source, column, check, words = CASES[kind]
    path = partition_path(data_dir, spec.source_by_name[source], day())
    corrupt.corrupt(path, kind, column)

    run = run_day(spec, instance, day())

    assert not run.success
    assert check in run.failed_checks, run.messages
    message = " ".join(run.messages)
    for word in words:
        assert word in message, (word, message)
    assert not features_materialized(instance, day())
    assert stored_rows(data_dir, "applicant_features", day()) is None
    raw = stored_rows(data_dir, f"raw_{source}", day())
    assert raw == landing_rows(path)
    valid = stored_rows(data_dir, f"validated_{source}", day())
    quarantined = stored_rows(data_dir, f"quarantine_{source}", day())
    assert valid + quarantined == raw


def test_bad_spec_fails_before_anything_runs(tmp_path, data_dir):
    data = yaml.safe_load(default_spec_path().read_text())
    data["features"]["model_inputs"].append("age_band")
    path = tmp_path / "bad_spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as error:
        build_definitions(load_spec(path))
    assert str(path) in str(error.value)
    assert "features.model_inputs[16]: 'age_band' is a protected attribute" in str(error.value)
    assert not (data_dir / "warehouse").exists()
