import datetime as dt

import numpy as np
import pandas as pd
import pytest
import yaml

from lending_pipeline.ml.features import build_features
from lending_pipeline.ml.scoring import (
    APPROVE,
    Scorer,
    records_from_tables,
    reference_values,
)
from lending_pipeline.ml.synth import build_tables
from lending_pipeline.ml.train import fit_candidate, labelled, out_of_time_split, predict
from lending_pipeline.spec import SpecError, load_spec


def typed_tables(spec, days=40, per_day=150, seed=5):
    """Generated tables typed like the validated warehouse tables."""
    tables = {}
    for name, table in build_tables(dt.date(2025, 1, 1), days, per_day, seed=seed).tables.items():
        frame = table.to_pandas()
        for column, declared in spec.source_by_name[name].columns.items():
            if declared.dtype == "date":
                frame[column] = pd.to_datetime(frame[column])
        tables[name] = frame
    return tables


@pytest.fixture(scope="module")
def fitted(spec):
    tables = typed_tables(spec)
    features = build_features(spec, tables).features
    frame = labelled(spec, features, tables["outcomes"], dt.date(2025, 6, 1))
    split = out_of_time_split(frame, "application_date", 8, 8)
    return tables, features, split


@pytest.fixture(scope="module", params=["hist_gradient_boosting", "logistic_scorecard"])
def scorer(request, spec, fitted):
    _, _, split = fitted
    trained = fit_candidate(spec, split, kind=request.param)
    reference = reference_values(spec, split[split["_split"] == "train"])
    return Scorer(spec, trained.model, trained.cutoff, reference)


def test_served_probabilities_equal_batch_scores(spec, fitted, scorer):
    tables, features, _ = fitted
    records = records_from_tables(spec, tables)[:800]
    served = np.array([d.probability for d in scorer.score(records)])
    one_by_one = np.array([scorer.score([r])[0].probability for r in records[:40]])
    batch = predict(spec, scorer.model, features.iloc[:800])
    np.testing.assert_allclose(served, batch, rtol=0, atol=1e-12)
    np.testing.assert_allclose(one_by_one, batch[:40], rtol=0, atol=1e-12)
    assert scorer.fast == (
        scorer.model.calibrated_classifiers_[0].estimator.estimator[-1].__class__.__name__
        == "HistGradientBoostingClassifier"
    )


def test_reason_codes_for_refer_and_decline_only_at_most_four_and_stable(spec, fitted, scorer):
    tables, _, _ = fitted
    records = records_from_tables(spec, tables)[:1500]
    decisions = scorer.score(records)
    adverse = [(r, d) for r, d in zip(records, decisions, strict=True) if d.decision != APPROVE]
    assert adverse and len(adverse) < len(records)
    codes = {reason.code for reason in spec.scoring.reason_codes.values()}
    for record, decision in adverse[:50]:
        assert 1 <= len(decision.reasons) <= 4
        assert all(reason["code"] in codes for reason in decision.reasons)
        assert scorer.score([record])[0].reasons == decision.reasons
    assert all(d.reasons == [] for d in decisions if d.decision == APPROVE)


@pytest.mark.parametrize("rows", [5, 300])
def test_contributions_equal_scoring_every_variation(spec, fitted, scorer, rows):
    """The boosted trees' per-tree shortcut (small and large batches) gives what scoring each
    application with each input at its reference gives."""
    tables, _, _ = fitted
    matrix = scorer.matrix(scorer.features(records_from_tables(spec, tables)[:rows]))
    probability = scorer.probabilities(matrix)
    k = matrix.shape[1]
    varied = np.repeat(matrix, k, axis=0)
    varied[np.arange(rows * k), np.tile(np.arange(k), rows)] = np.tile(scorer._reference_row, rows)
    expected = probability[:, None] - scorer.probabilities(varied).reshape(rows, k)
    contribution = scorer._contributions(matrix, probability)
    np.testing.assert_allclose(contribution, expected, rtol=0, atol=1e-12)
    at_reference = matrix == scorer._reference_row[None, :]
    assert at_reference.any() and (contribution[at_reference] == 0).all()


def test_the_top_reason_is_the_input_that_moves_risk_most(spec, fitted, scorer):
    tables, _, _ = fitted
    record = dict(records_from_tables(spec, tables)[0])
    record["revolving_balance"] = 3 * (record["revolving_limit"] or 10_000)
    record["delinquencies_24m"] = 12
    record["months_since_last_delinquency"] = 1
    decision = scorer.score([record])[0]
    assert decision.decision != APPROVE
    assert {r["feature"] for r in decision.reasons} & {
        "utilization",
        "delinquencies_24m",
        "months_since_last_delinquency",
    }


def test_points_fall_as_risk_rises_and_decisions_follow_the_bands(spec, scorer):
    probabilities = [0.001, 0.02, 0.1, 0.3, 0.6, 0.999]
    points = scorer.points(np.array(probabilities)).tolist()
    assert points == sorted(points, reverse=True) and len(set(points)) > 3
    scale = spec.scoring.points
    assert points[0] <= scale.max_score and points[-1] >= scale.min_score
    assert scorer.points(np.array([1 / (1 + scale.base_odds)])).tolist() == [scale.base_score]
    assert scorer.decide(np.nextafter(scorer.cutoff, 0)) == "approve"
    assert scorer.decide(scorer.cutoff) == "refer"  # a tie is not approved (decision.py)
    assert scorer.decide(scorer.cutoff + 1e-6) in ("refer", "decline")
    assert scorer.decide(spec.scoring.decline_above_pd + 1e-6) == "decline"


def test_served_decision_at_the_cutoff_equals_the_evaluated_one(spec, fitted, scorer):
    """With the cutoff set to a probability some applications have exactly (calibrated scores
    tie), the served decisions approve the same applications, at the same rate and per group,
    as the metrics the gates judge."""
    from lending_pipeline.ml.metrics import approval_rates, business_impact

    tables, _, _ = fitted
    records = records_from_tables(spec, tables)[:600]
    prob = np.array([d.probability for d in scorer.score(records)])
    values, counts = np.unique(prob, return_counts=True)
    tie = values[np.argmax(counts)] if counts.max() > 1 else np.sort(prob)[prob.size // 2]
    at_cutoff = Scorer(spec, scorer.model, float(tie), scorer_reference(spec, fitted))
    served = [d.decision for d in at_cutoff.score(records)]
    assert (prob == tie).sum() >= 1
    assert {served[i] for i in np.flatnonzero(prob == tie)} <= {"refer", "decline"}
    served_approved = np.array([d == APPROVE for d in served])
    outcome = np.zeros(prob.size, dtype=int)
    outcome[::7] = 1
    evaluated = business_impact(outcome, prob, float(tie))
    assert evaluated["approved_count"] == served_approved.sum()
    groups = np.array([r["sex"] for r in records], dtype=object)
    rates = approval_rates(prob, float(tie), groups)
    for group, rate in rates.items():
        assert rate == pytest.approx(served_approved[groups.astype(str) == group].mean())


def scorer_reference(spec, fitted):
    _, _, split = fitted
    return reference_values(spec, split[split["_split"] == "train"])


def test_reference_values_are_aggregates_of_repaid_applicants(spec, fitted):
    _, _, split = fitted
    train = split[split["_split"] == "train"]
    reference = reference_values(spec, train)
    assert set(reference) == set(spec.features.model_inputs)
    good = train[train["target"] == 0]
    assert reference["debt_to_income"] == pytest.approx(good["debt_to_income"].median())
    assert reference["purpose"] == good["purpose"].astype(str).value_counts().idxmax()


def test_spec_needs_a_reason_code_for_every_model_input(tmp_path):
    text = load_spec().model_dump(mode="json")
    del text["scoring"]["reason_codes"]["utilization"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(text))
    with pytest.raises(SpecError, match="needs a reason code; missing: utilization"):
        load_spec(path)


def test_forest_routes_like_scikit_learn_including_missing_and_unknown_categories(spec, fitted):
    tables, _, split = fitted
    trained = fit_candidate(spec, split)
    scorer = Scorer(spec, trained.model, trained.cutoff, {})
    forest = scorer._fast.forest
    records = records_from_tables(spec, tables)[:40]
    x = scorer.matrix(scorer.features(records))[:, scorer._fast.order]
    x[::3, 0] = np.nan  # missing category
    x[1::3, 1] = 250  # a category code the model never saw
    x[2::5, 2] = -1  # out of range
    x[::4, -1] = np.nan  # missing number
    assert (forest.category_row > 0).any()
    np.testing.assert_allclose(
        forest.decision_function(x),
        trained.model.calibrated_classifiers_[0].estimator.estimator[-1].decision_function(x),
        rtol=0,
        atol=1e-12,
    )
