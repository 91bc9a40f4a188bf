import numpy as np
import pandas as pd

from lending_pipeline.ml.features import (
    build_features,
    freshness,
    model_matrix,
    point_in_time_latest,
    point_in_time_violations,
)


def test_point_in_time_takes_latest_row_not_after_the_anchor():
    anchor = pd.DataFrame({"id": ["a", "b", "c"], "app_date": pd.to_datetime(["2025-01-10"] * 3)})
    rows = pd.DataFrame(
        {
            "id": ["a", "a", "a", "b", "c"],
            "pull_date": pd.to_datetime(
                ["2025-01-01", "2025-01-09", "2025-01-20", "2025-01-11", "2025-01-10"]
            ),
            "value": [1, 2, 99, 98, 3],
        }
    )
    latest, excluded = point_in_time_latest(rows, anchor, "id", "pull_date", "app_date")
    assert dict(zip(latest["id"], latest["value"], strict=True)) == {"a": 2, "c": 3}
    assert excluded == 2


def tables(spec):
    apps = pd.DataFrame(
        {
            "application_id": ["A1", "A2"],
            "application_date": pd.to_datetime(["2025-03-03", "2025-03-03"]),
            "loan_amount": [12_000.0, 3_000.0],
            "term_months": pd.array([36, 12], dtype="Int64"),
            "purpose": ["car", "medical"],
            "channel": ["web", "branch"],
            "full_name": ["p_x", "p_y"],
            "ssn": ["p_x", "p_y"],
            "date_of_birth": ["p_x", "p_y"],
            "email": ["p_x", "p_y"],
            "address": ["p_x", "p_y"],
            "age_band": ["25-34", "65+"],
            "sex": ["F", "M"],
        }
    )
    bureau = pd.DataFrame(
        {
            "application_id": ["A1", "A1", "A2"],
            "pull_date": pd.to_datetime(["2025-03-01", "2025-03-20", "2024-12-01"]),
            "tradeline_count": pd.array([5, 5, 2], dtype="Int64"),
            "revolving_balance": [500.0, 9000.0, 100.0],
            "revolving_limit": [1000.0, 1000.0, 0.0],
            "delinquencies_24m": pd.array([0, 4, 1], dtype="Int64"),
            "months_since_last_delinquency": [np.nan, 1.0, 3.0],
            "inquiries_6m": pd.array([1, 1, 0], dtype="Int64"),
            "oldest_account_months": pd.array([60, 60, 12], dtype="Int64"),
            "monthly_debt_payments": [200.0, 200.0, np.nan],
        }
    )
    income = pd.DataFrame(
        {
            "application_id": ["A1", "A2"],
            "reported_date": pd.to_datetime(["2025-03-03", "2025-03-03"]),
            "stated_income": [60_000.0, 24_000.0],
            "verified_income": [48_000.0, np.nan],
            "employment_type": ["salaried", "retired"],
            "employment_tenure_months": pd.array([30, 200], dtype="Int64"),
            "verification_status": ["verified", "stated"],
        }
    )
    return {"applications": apps, "bureau": bureau, "income": income}


def test_features_are_point_in_time_and_derived_as_declared(spec):
    result = build_features(spec, tables(spec))
    f = result.features.set_index("application_id")
    assert result.excluded_after_application == {"bureau": 1, "income": 0}
    assert f.loc["A1", "delinquencies_24m"] == 0  # the later re-pull (4) is ignored
    assert f.loc["A1", "utilization"] == 0.5
    assert np.isnan(f.loc["A2", "utilization"])  # no revolving limit
    installment = 12_000 * 0.01 / (1 - 1.01**-36)
    assert np.isclose(f.loc["A1", "debt_to_income"], (200 + installment) / 4_000)
    assert f.loc["A1", "income_verified"] == 1.0 and f.loc["A2", "income_verified"] == 0.0
    assert np.isclose(f.loc["A1", "income_gap"], 0.2)
    assert f.loc["A2", "income_stability"] == 1.0
    assert f.loc["A2", "bureau_data_age_days"] == 92
    assert not {"full_name", "ssn", "email"} & set(result.features.columns)
    assert {"age_band", "sex"} <= set(result.features.columns)
    assert point_in_time_violations(spec, result.features) == {
        "pull_date": 0,
        "reported_date": 0,
    }
    fresh = freshness(spec, result.features)
    assert (fresh.stale, fresh.rows, fresh.passed) == (1, 2, False)
    matrix = model_matrix(spec, result.features)
    assert list(matrix.columns) == spec.features.model_inputs
    assert matrix["purpose"].tolist() == ["car", "medical"]
