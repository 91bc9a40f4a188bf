import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from lending_pipeline.ml.synth import build_tables, generate_consumer_loans

START = dt.date(2025, 1, 1)


def test_fixed_seed_is_deterministic():
    a = build_tables(START, 2, 100, seed=3).tables
    b = build_tables(START, 2, 100, seed=3).tables
    c = build_tables(START, 2, 100, seed=4).tables
    assert all(a[name].to_pandas().equals(b[name].to_pandas()) for name in a)
    assert not a["applications"].equals(c["applications"])


def test_tables_match_the_spec(spec):
    tables = build_tables(START, 2, 100, seed=3).tables
    for name, table in tables.items():
        assert table.column_names == list(spec.source_by_name[name].columns), name


def test_outcomes_only_once_matured_and_nothing_from_the_future(spec, tmp_path):
    as_of = START + dt.timedelta(days=spec.target.maturity_days + 1)
    generate_consumer_loans(spec, tmp_path, START, 5, 40, as_of=as_of)
    outcomes = sorted(p.stem for p in (tmp_path / "landing" / "outcomes").glob("*.csv"))
    assert outcomes == ["2025-01-01", "2025-01-02"]
    bureau = pd.concat(pd.read_csv(p) for p in (tmp_path / "landing" / "bureau").glob("*.csv"))
    assert (pd.to_datetime(bureau["pull_date"]) <= pd.Timestamp(as_of)).all()


@pytest.mark.parametrize("scenario", ["income_shock", "utilization_spike", "missing_bureau_fields"])
def test_scenarios_change_applicants_from_their_start(scenario):
    base = build_tables(START, 20, 300, seed=5).tables
    shifted = build_tables(
        START, 20, 300, seed=5, scenario=scenario, scenario_start=START + dt.timedelta(days=10)
    ).tables
    late = slice(int(base["applications"].num_rows * 0.6), None)
    if scenario == "income_shock":
        before = np.median(base["income"]["stated_income"].to_numpy()[late])
        after = np.median(shifted["income"]["stated_income"].to_numpy()[late])
        assert after < 0.8 * before
    elif scenario == "utilization_spike":
        util = lambda t: t["revolving_balance"].to_numpy() / t["revolving_limit"].to_numpy()  # noqa: E731
        assert np.nanmean(util(shifted["bureau"])) > np.nanmean(util(base["bureau"])) + 0.08
    else:
        missing = pd.isna(shifted["bureau"]["inquiries_6m"].to_pandas()).mean()
        assert missing > 0.08 and pd.isna(base["bureau"]["inquiries_6m"].to_pandas()).mean() == 0


def test_a_good_model_reaches_the_documented_auc_and_a_naive_one_does_not():
    tables = build_tables(START, 40, 1000, seed=9)
    apps = tables.tables["applications"].to_pandas()
    income = tables.tables["income"].to_pandas()
    bureau = tables.tables["bureau"].to_pandas()
    bureau = bureau[
        bureau["pull_date"]
        <= bureau["application_id"].map(
            dict(zip(apps["application_id"], apps["application_date"], strict=True))
        )
    ].drop_duplicates("application_id", keep="first")
    y = tables.tables["outcomes"]["default_flag"].to_numpy()
    frame = apps.merge(income, on="application_id").merge(bureau, on="application_id", how="left")
    frame["util"] = frame["revolving_balance"] / frame["revolving_limit"]
    frame["dti"] = frame["monthly_debt_payments"] / frame["stated_income"]
    frame["verified"] = (frame["verification_status"] == "verified").astype(float)
    columns = [
        "loan_amount",
        "term_months",
        "util",
        "dti",
        "delinquencies_24m",
        "inquiries_6m",
        "oldest_account_months",
        "stated_income",
        "verified",
        "employment_tenure_months",
        "months_since_last_delinquency",
    ]
    x = frame[columns].astype(float).to_numpy()
    cut = int(len(x) * 0.75)  # out of time: the last quarter of days
    model = HistGradientBoostingClassifier(random_state=0).fit(x[:cut], y[:cut])
    auc = roc_auc_score(y[cut:], model.predict_proba(x[cut:])[:, 1])
    naive = HistGradientBoostingClassifier(random_state=0).fit(x[:cut, :2], y[:cut])
    naive_auc = roc_auc_score(y[cut:], naive.predict_proba(x[cut:, :2])[:, 1])
    assert 0.75 <= auc <= 0.87
    assert naive_auc < 0.65
    assert 0.05 < y.mean() < 0.2


def test_untouched_days_sit_well_inside_the_freshness_limit(spec):
    """Generated days must not raise freshness incidents: the stale share of every day, as
    the freshness check computes it, stays under half the shipped limit."""
    from lending_pipeline.ml.features import build_features, freshness

    days, per_day = 30, 400
    tables = build_tables(START, days, per_day, seed=7).tables
    frames = {name: table.to_pandas() for name, table in tables.items()}
    apps = frames["applications"]
    apps["application_date"] = pd.to_datetime(apps["application_date"])
    bureau = frames["bureau"]
    bureau["pull_date"] = pd.to_datetime(bureau["pull_date"])
    income = frames["income"]
    income["reported_date"] = pd.to_datetime(income["reported_date"])
    limit = spec.features.freshness.max_stale_share
    shares = []
    for _, group in apps.groupby("application_date"):
        ids = set(group["application_id"])
        tables = {
            "applications": group,
            "bureau": bureau[bureau["application_id"].isin(ids)],
            "income": income[income["application_id"].isin(ids)],
        }
        result = freshness(spec, build_features(spec, tables).features)
        shares.append(result.stale_share)
    assert len(shares) == days
    assert max(shares) <= limit / 2, (max(shares), limit)
