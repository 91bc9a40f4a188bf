"""The drift dashboard's snapshots: real Evidently reports over generated applications, stored
in a real local workspace."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from lending_pipeline.ml.dashboard import (
    SCORE,
    dashboard,
    day_snapshot,
    decline_reason_shares,
    layout,
    median_shift,
    project_id,
    publish,
    served_decisions,
    snapshot_id,
)
from lending_pipeline.ml.drift import monitored_columns
from lending_pipeline_tests.ml.test_drift import check, features


@pytest.fixture(scope="module")
def frames(spec):
    """About 8,400 reference rows and a day with the utilization spike."""
    return features(spec, 7, seed=1), features(spec, 1, seed=2, scenario="utilization_spike")


SERVED = served_decisions(
    [
        {"decision": "approve", "reason_codes": []},
        {"decision": "decline", "reason_codes": ["RU01", "DI01"]},
        {"decision": "decline", "reason_codes": ["RU01"]},
        {"decision": "refer", "reason_codes": ["IQ01"]},
    ]
)


def values(snapshot) -> dict:
    """(metric type, its distinguishing parameter) -> value, from the stored snapshot."""
    out = {}
    for metric in snapshot.dict()["metrics"]:
        config = dict(metric["config"])
        kind = config.pop("type").rsplit(":", 1)[1]
        key = config.get("column") or config.get("decision") or config.get("tier")
        if kind == "QuantileValue":
            key = (key, config["quantile"])
        out[(kind, key)] = metric["value"]
    return out


def test_snapshot_psi_is_the_psi_the_tiers_use(spec, frames):
    reference, current = frames
    rng = np.random.default_rng(0)
    ref_scores, cur_scores = rng.beta(2, 12, len(reference)), rng.beta(3, 10, len(current))
    snapshot = day_snapshot(spec, "2025-03-09", current, reference, cur_scores, ref_scores, SERVED)
    result = check(spec, current, reference, current_scores=cur_scores, reference_scores=ref_scores)
    got = values(snapshot)
    columns, _ = monitored_columns(spec)
    for column in columns:
        assert got[("QuantilePSI", column)] == pytest.approx(
            result.table.loc[column, "psi"], abs=1e-6
        )
    assert got[("QuantilePSI", "utilization")] >= spec.drift.psi_retrain
    assert got[("QuantilePSI", SCORE)] == pytest.approx(result.score.psi, abs=1e-6)
    assert got[("PSITier", "warn")] == spec.drift.psi_warn
    assert got[("PSITier", "retrain")] == spec.drift.psi_retrain
    missing = got[("MissingValueCount", "inquiries_6m")]
    assert missing["share"] == pytest.approx(current["inquiries_6m"].isna().mean())
    expected = current["utilization"].median() / reference["utilization"].median() - 1
    assert got[("MedianShift", "utilization")] == pytest.approx(expected, abs=1e-6)
    assert got[("QuantileValue", (SCORE, 0.5))] == pytest.approx(np.quantile(cur_scores, 0.5))
    assert got[("DecisionShare", "approve")] == 0.25
    assert got[("DecisionShare", "decline")] == 0.5
    assert got[("DeclineReasons", None)] == {"RU01": 1.0, "DI01": 0.5}
    assert snapshot.to_snapshot_model().timestamp == dt.datetime(2025, 3, 9)


def test_a_day_without_served_decisions_or_a_model_has_the_feature_panels_only(spec, frames):
    reference, current = frames
    got = values(day_snapshot(spec, "2025-03-09", current, reference, None, None, None))
    kinds = {kind for kind, _ in got}
    assert {"QuantilePSI", "PSITier", "MissingValueCount", "MedianShift"} == kinds
    assert ("QuantilePSI", SCORE) not in got


def test_decline_reasons_are_the_most_frequent_among_declines():
    served = served_decisions(
        [{"decision": "decline", "reason_codes": [f"C{i}", "A"]} for i in range(7)]
        + [{"decision": "approve", "reason_codes": ["Z"]}] * 5
    )
    shares = decline_reason_shares(served, top=3)
    assert list(shares) == ["A", "C0", "C1"]
    assert shares["A"] == 1.0 and shares["C0"] == pytest.approx(1 / 7, abs=1e-6)
    assert decline_reason_shares(served_decisions([{"decision": "approve"}])) == {}


def test_median_shift_ignores_missing_values_and_guards_zero():
    assert median_shift(np.array([1.0, 2.0, 3.0, np.nan]), np.array([4.0, np.nan])) == 1.0
    assert np.isnan(median_shift(np.array([0.0, 0.0]), np.array([1.0])))
    assert np.isnan(median_shift(np.array([1.0]), np.array([np.nan])))


def test_layout_follows_the_spec(spec):
    plan = layout(spec)
    assert {"inquiries_6m", "revolving_balance", "monthly_debt_payments"} <= set(
        plan.missing_columns
    )
    assert "loan_amount" not in plan.missing_columns  # not nullable
    assert set(plan.shift_columns) == {
        "monthly_income",
        "stated_income",
        "verified_income",
        "utilization",
    }


def test_a_spec_without_income_or_utilization_follows_every_numeric_input():
    from lending_pipeline.spec import default_spec_path, load_spec

    sme = load_spec(default_spec_path().parent / "sme_loan.yaml")
    plan = layout(sme)
    assert "requested_amount" in plan.shift_columns and "overdraft_days" in plan.missing_columns
    assert "Median shift of numeric inputs" in {p.title for p in dashboard(sme).panels}


def test_workspace_keeps_one_snapshot_per_day_in_one_project(spec, frames, tmp_path):
    from evidently.ui.workspace import Workspace

    reference, current = frames
    days = ["2025-03-08", "2025-03-09", "2025-03-08"]  # the 8th monitored twice
    ids = [
        publish(tmp_path, spec, day, day_snapshot(spec, day, current, reference, None, None, None))
        for day in days
    ]
    assert {project for project, _ in ids} == {str(project_id(spec.name))}
    workspace = Workspace(str(tmp_path))
    assert [p.name for p in workspace.list_projects()] == [spec.name]
    runs = workspace.list_runs(project_id(spec.name))
    stored = {workspace.get_run(project_id(spec.name), r).metadata["day"]: str(r) for r in runs}
    assert stored == {"2025-03-09": ids[1][1], "2025-03-08": ids[2][1]}  # the later 8th kept
    assert ids[0] == ids[2] and ids[2][1] == str(snapshot_id(spec.name, "2025-03-08"))
    board = workspace.get_dashboard(project_id(spec.name))
    assert board == dashboard(spec)
    assert [p.title for p in board.panels] == [
        "PSI per feature",
        "Missing rate of nullable fields",
        "Income and utilization shift",
        "Score distribution",
        "Approval rate of served decisions",
        "Most frequent decline reasons",
    ]
    assert workspace.get_run(project_id(spec.name), ids[1][1]).timestamp == dt.datetime(2025, 3, 9)


def test_served_decisions_keep_no_inputs():
    frame = served_decisions([{"decision": "approve", "reason_codes": [], "inputs": {"x": 1}}])
    assert list(frame.columns) == ["decision", "reason_codes"]
    assert isinstance(frame, pd.DataFrame)
