import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy import stats

from lending_pipeline.ml.drift import (
    EPSILON,
    category_counts,
    check_drift,
    ks_test,
    monitored_columns,
    numeric_psi,
    plot_psi,
    psi_from_counts,
    score_drift,
    tier,
    write_evidently_report,
)
from lending_pipeline.ml.features import build_features
from lending_pipeline.ml.synth import build_tables
from lending_pipeline.ml.train import build_pipeline
from lending_pipeline.ml.validation import coerce
from lending_pipeline.spec import DriftSpec

START = dt.date(2025, 3, 1)
DAILY = 1_200


def typed_tables(spec, generated) -> dict[str, pd.DataFrame]:
    """Generated Arrow tables as the validation stage hands them on: parsed from text."""
    typed = {}
    for name, table in generated.tables.items():
        text = pa.table({c: pc.cast(table[c], pa.string()) for c in table.column_names})
        typed[name] = coerce(text.to_pandas(), spec.source_by_name[name])[0]
    return typed


def features(spec, days: int, seed: int, scenario: str | None = None) -> pd.DataFrame:
    """Applicant features (plus the monitored source columns) and the label, via build_features."""
    generated = build_tables(START, days, DAILY, seed=seed, scenario=scenario, scenario_start=START)
    tables = typed_tables(spec, generated)
    columns, _ = monitored_columns(spec)
    frame = build_features(spec, tables, columns).features
    labels = tables["outcomes"].set_index("application_id")["default_flag"]
    return frame.assign(default_flag=frame["application_id"].map(labels))


@pytest.fixture(scope="module")
def reference(spec) -> pd.DataFrame:
    """25 days of about 1,200 applications: about 30,000 rows."""
    return features(spec, 25, seed=1)


def check(spec, current, reference, **kwargs):
    columns, categorical = monitored_columns(spec)
    return check_drift(current, reference, spec.drift, columns, categorical, **kwargs)


def test_numeric_psi_matches_a_hand_computed_value():
    reference = np.arange(1.0, 11.0)  # median 5.5: 5 rows below, 5 at or above, none missing
    current = np.array([1.0, 2.0, 3.0, 8.0, np.nan])  # shares 0.6, 0.2 and 0.2 missing
    expected = (
        (0.6 - 0.5) * math.log(0.6 / 0.5)
        + (0.2 - 0.5) * math.log(0.2 / 0.5)
        + (0.2 - EPSILON) * math.log(0.2 / EPSILON)
    )
    assert numeric_psi(reference, current, bins=2) == pytest.approx(expected, rel=1e-12)


def test_categorical_psi_has_an_other_or_missing_bin():
    reference = pd.Series(["a"] * 6 + ["b"] * 4)
    current = pd.Series(["a"] * 3 + ["b"] * 3 + ["c"] + [None] * 3)
    ref_counts, cur_counts = category_counts(reference, current)
    assert ref_counts.tolist() == [6, 4, 0] and cur_counts.tolist() == [3, 3, 4]
    expected = (
        (0.3 - 0.6) * math.log(0.3 / 0.6)
        + (0.3 - 0.4) * math.log(0.3 / 0.4)
        + (0.4 - EPSILON) * math.log(0.4 / EPSILON)
    )
    assert psi_from_counts(ref_counts, cur_counts) == pytest.approx(expected, rel=1e-12)


def test_discrete_values_share_bins_instead_of_splitting_ties():
    reference = np.array([0.0] * 70 + [1.0] * 20 + [2.0] * 10)
    assert numeric_psi(reference, reference[::-1].copy()) == 0.0
    more_ones = np.array([0.0] * 50 + [1.0] * 40 + [2.0] * 10)
    expected = (0.5 - 0.7) * math.log(0.5 / 0.7) + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert numeric_psi(reference, more_ones) == pytest.approx(expected, rel=1e-12)


def test_ks_test_agrees_with_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 4_000), rng.normal(0.05, 1, 3_000).round(1)
    statistic, p_value = ks_test(np.sort(a), np.sort(b))
    expected = stats.ks_2samp(a, b, method="asymp")
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=0.05)


def random_frame(rng, n: int) -> pd.DataFrame:
    income = rng.lognormal(10.9, 0.5, n)
    income[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "income": income,
            "count": rng.poisson(1.5, n),
            "kind": rng.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2]),
        }
    )


def test_identical_data_has_no_drift():
    frame = random_frame(np.random.default_rng(0), 5_000)
    result = check_drift(frame, frame.copy())
    assert result.table["psi"].abs().max() < 1e-12
    assert (result.table["status"] == "ok").all() and result.worst_tier == "ok"
    assert result.table.loc["kind", "kind"] == "categorical"
    assert result.table.loc["income", "missing_current"] == pytest.approx(0.05, abs=0.01)
    assert result.drifted == {} and result.missing_spikes == []


def test_tiers_missing_spikes_and_minimum_volume():
    settings = DriftSpec()
    assert [tier(p, settings) for p in (0.0999, 0.1, 0.2499, 0.25)] == [
        "ok",
        "warn",
        "warn",
        "retrain",
    ]
    rng = np.random.default_rng(1)
    reference, current = random_frame(rng, 20_000), random_frame(rng, 2_000)
    current.loc[current.index[:130], "income"] = np.nan  # missing about 5% -> 11.5%
    result = check_drift(current, reference, settings)
    assert result.table.loc["income", "missing_spike"]
    assert result.table.loc["income", "psi"] < settings.psi_warn  # PSI alone would not flag it
    assert result.table.loc["income", "status"] == "warn" and result.missing_spikes == ["income"]
    small = check_drift(current.head(settings.min_rows - 1), reference, settings)
    assert small.worst_tier == "not_judged" and small.drifted == {}
    assert set(small.table["status"]) == {"not_judged"}


def test_summary_is_json_with_aggregates_only():
    rng = np.random.default_rng(2)
    reference, current = random_frame(rng, 3_000), random_frame(rng, 1_000)
    current["income"] = current["income"] * 0.6
    scores = rng.beta(2, 12, 3_000), rng.beta(2, 12, 1_000)
    result = check_drift(current, reference, current_scores=scores[1], reference_scores=scores[0])
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    assert summary["worst_tier"] == "retrain" and list(summary["drifted"]) == ["income"]
    assert summary["rows"] == {"reference": 3_000, "current": 1_000}
    assert summary["score"]["status"] == "ok"
    assert [f["feature"] for f in summary["features"]] == ["income", "count", "kind"]
    rendered = json.dumps(summary)
    assert not any(f"{value:.2f}" in rendered for value in current["income"].dropna().head(50))
    assert '"x"' not in rendered and '"y"' not in rendered


def test_monitored_columns_follow_derived_inputs_back_to_their_sources(spec):
    columns, categorical = monitored_columns(spec)
    assert columns[: len(spec.features.model_inputs)] == spec.features.model_inputs
    assert {"stated_income", "verified_income", "monthly_income", "revolving_balance"} <= set(
        columns
    )
    assert not {"application_id", "application_date", "age_band", "sex", "ssn"} & set(columns)
    assert set(categorical) == {"purpose", "channel", "employment_type", "verification_status"}


EXPECTED_RETRAIN = {
    "income_shock": {"stated_income", "monthly_income"},
    "utilization_spike": {"utilization"},
    "missing_bureau_fields": {
        "utilization",
        "inquiries_6m",
        "revolving_balance",
        "monthly_debt_payments",
    },
}
UNMOVED = ["loan_amount", "term_months", "purpose", "channel", "delinquencies_24m"]


@pytest.mark.parametrize("scenario", sorted(EXPECTED_RETRAIN))
def test_each_scenario_is_detected_at_the_retrain_tier(spec, reference, scenario):
    current = features(spec, 1, seed=2, scenario=scenario)
    result = check(spec, current, reference)
    retrain = set(result.table.index[result.table["status"] == "retrain"])
    assert result.worst_tier == "retrain"
    assert EXPECTED_RETRAIN[scenario] <= retrain
    assert (result.table.loc[UNMOVED, "status"] == "ok").all()
    if scenario == "missing_bureau_fields":
        assert set(result.missing_spikes) == EXPECTED_RETRAIN[scenario]
    else:
        assert result.missing_spikes == []


def test_undrifted_data_from_another_seed_is_not_flagged(spec, reference):
    current = features(spec, 1, seed=3)
    result = check(spec, current, reference)
    assert result.worst_tier == "ok", result.drifted
    assert result.table["psi"].max() < spec.drift.psi_warn / 2


def test_score_drift_of_a_scorecard_fitted_on_the_reference(spec, reference):
    model = build_pipeline(spec, "logistic_scorecard")
    model.fit(reference[spec.features.model_inputs], reference["default_flag"])

    def scores(frame):
        return model.predict_proba(frame[spec.features.model_inputs])[:, 1]

    baseline = scores(reference)
    stable = score_drift(baseline, scores(features(spec, 1, seed=4)), spec.drift)
    shifted = score_drift(
        baseline, scores(features(spec, 1, seed=4, scenario="utilization_spike")), spec.drift
    )
    assert stable.status == "ok" and stable.psi < 0.05
    assert shifted.status == "retrain" and shifted.mean_current > shifted.mean_reference


def test_psi_chart_is_a_png(spec, reference, tmp_path):
    result = check(spec, features(spec, 1, seed=2, scenario="income_shock"), reference)
    png = plot_psi(result, tmp_path / "plots" / "psi.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evidently_report_is_written_on_a_sample(spec, reference, tmp_path):
    current = features(spec, 1, seed=2, scenario="income_shock")
    columns = ["stated_income", "loan_to_income", "purpose"]
    html = write_evidently_report(
        current, reference, tmp_path / "drift.html", columns, ["purpose"], sample_size=1_000
    )
    text = html.read_text(encoding="utf-8")
    assert "<html" in text[:500].lower()
    assert all(name in text for name in columns) and "utilization" not in text
