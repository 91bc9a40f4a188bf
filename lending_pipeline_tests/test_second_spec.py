"""A differently shaped product onboards with a spec and files only."""

import datetime as dt
from pathlib import Path

import pandas as pd

from lending_pipeline.ml.synth_generic import generate_from_spec
from lending_pipeline.spec import load_spec
from lending_pipeline_tests.defs.helpers import run_day, stored_rows

SME = Path(__file__).resolve().parents[1] / "lending_pipeline" / "specs" / "sme_loan.yaml"


def test_sme_spec_runs_through_features(tmp_path, monkeypatch, instance):
    monkeypatch.setenv("LENDING_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LENDING_PII_KEY", "another-test-key-0123456789")
    spec = load_spec(SME)
    start = dt.date(2025, 4, 1)
    generate_from_spec(spec, tmp_path / "data", start, 2, 80, as_of=dt.date(2025, 6, 1))
    assert list((tmp_path / "data" / "landing" / "sme" / "requests").glob("*.parquet"))

    run = run_day(spec, instance, "2025-04-02")
    assert run.success and not run.failed_checks, run.messages
    assert stored_rows(tmp_path / "data", "validated_loan_requests", "2025-04-02") == 80
    path = tmp_path / "data" / "warehouse" / "applicant_features" / "2025-04-02.parquet"
    features = pd.read_parquet(path)
    assert len(features) == 80
    assert {"request_id", "net_margin", "amount_to_revenue", "region"} <= set(features.columns)
    assert not {"director_name", "company_number"} & set(features.columns)
