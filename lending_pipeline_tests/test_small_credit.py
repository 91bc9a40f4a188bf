"""The onboarding walk-through's spec (docs/spec.md): extracts without dates of their own, a
static reference table joined by key, renamed and namespaced columns; runs on data generated
in that shape with a spec and no code."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from lending_pipeline.defs.resources import arrow_to_pandas
from lending_pipeline.ml.ingest import ingest
from lending_pipeline.ml.synth_generic import generate_from_spec
from lending_pipeline.spec import SpecError, load_spec
from lending_pipeline_tests.defs.helpers import run_day, stored_rows

SMALL = Path(__file__).resolve().parents[1] / "lending_pipeline" / "specs" / "small_credit.yaml"
START = dt.date(2025, 4, 1)
KEY = b"small-credit-test-key-0123456789"


@pytest.fixture
def small(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("LENDING_DATA_DIR", str(data))
    monkeypatch.setenv("LENDING_PII_KEY", KEY.decode())
    spec = load_spec(SMALL)
    generate_from_spec(spec, data, START, 2, 60, as_of=dt.date(2025, 6, 1))
    return spec, data


def test_extracts_without_dates_renamed_and_namespaced_columns(small):
    spec, data = small
    day = "2025-04-02"
    history = arrow_to_pandas(ingest(spec.source_by_name["credit_history"], data, day, KEY).table)
    assert set(history["snapshot_date"]) == {day}  # the file's partition is its date
    assert history["bureau_score"].notna().all()  # `score` in the file, renamed
    employment = arrow_to_pandas(ingest(spec.source_by_name["employment"], data, day, KEY).table)
    assert {"emp_years", "emp_income", "emp_score"} <= set(employment.columns)
    assert employment["_ingest_error"].isna().all()
    regions = ingest(spec.source_by_name["regions"], data, day, KEY)
    assert regions.rows == 5 and regions.files[0].path == "reference/small/regions.csv"


def test_the_walkthrough_spec_runs_through_features(small, instance):
    spec, data = small
    run = run_day(spec, instance, "2025-04-02")
    assert run.success and not run.failed_checks, run.messages
    assert stored_rows(data, "validated_regions", "2025-04-02") == 5
    features = pd.read_parquet(data / "warehouse" / "applicant_features" / "2025-04-02.parquet")
    assert len(features) == 60
    assert features["unemployment_rate"].notna().all()  # static reference joined by key
    assert {"bureau_score", "emp_score", "burden", "age_band", "sex"} <= set(features.columns)
    assert "full_name" not in features.columns
    assert (features["snapshot_date"] == pd.Timestamp("2025-04-02")).all()


def test_joined_sources_sharing_a_column_name_are_told_to_rename(tmp_path):
    text = SMALL.read_text().replace("rename: {score: bureau_score}", "rename: {}")
    text = text.replace("bureau_score: {dtype", "emp_score: {dtype").replace(
        "    - bureau_score\n", ""
    )
    path = tmp_path / "clash.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="column 'emp_score' is also in source 'credit_history'"):
        load_spec(path)
