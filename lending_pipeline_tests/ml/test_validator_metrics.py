"""What a validator asks: Brier skill, the equal-opportunity gate, must-beat-the-champion,
calibration per group, models at the same approval rate, declared proxies."""

import numpy as np
import pandas as pd
import pytest
import yaml

from lending_pipeline.ml.evaluate import (
    evaluate_gates,
    model_card,
    report,
    validator_figures,
)
from lending_pipeline.ml.metrics import brier_skill_score
from lending_pipeline.ml.validator_metrics import (
    at_same_approval_rate,
    group_calibration,
    proxy_report,
)
from lending_pipeline.spec import GateSpec, PipelineSpec, SpecError, default_spec_path, load_spec


def frame(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    target = (rng.random(n) < 0.2).astype(int)
    prob = np.clip(0.15 + 0.3 * target + rng.normal(0, 0.12, n), 0.001, 0.999)
    return pd.DataFrame(
        {
            "target": target,
            "prob": prob,
            "age_band": rng.choice(["18-24", "25-34", "35-44"], n),
            "sex": rng.choice(["F", "M"], n),
            "loan_amount": rng.uniform(1000, 20000, n),
        }
    )


def gates_by_name(gates, candidate, baseline, champion):
    return {g.gate: g for g in evaluate_gates(gates, candidate, baseline, champion)}


def test_brier_skill_is_zero_for_the_base_rate_and_one_when_perfect():
    y = np.array([0, 0, 0, 1] * 50)
    assert brier_skill_score(y, np.full(y.size, y.mean())) == pytest.approx(0.0)
    assert brier_skill_score(y, y.astype(float)) == pytest.approx(1.0)
    assert brier_skill_score(y, 1 - y.astype(float)) < 0


def test_brier_skill_gate_fails_a_model_worse_than_the_base_rate(spec):
    data = frame()
    noise = np.random.default_rng(3).random(len(data))
    candidate = report(spec, data, noise, 0.5)  # random probabilities, far from the base rate
    gate = gates_by_name(GateSpec(), candidate, candidate, None)["min_brier_skill"]
    assert candidate["brier_skill"] < 0 and not gate.passed
    good = report(spec, data, data["prob"].to_numpy(), 0.3)
    assert gates_by_name(GateSpec(), good, good, None)["min_brier_skill"].passed


def test_equal_opportunity_gate(spec):
    data = frame()
    prob = data["prob"].to_numpy().copy()
    women = (data["sex"] == "F").to_numpy()
    prob[women] = np.minimum(prob[women] + 0.12, 0.999)  # goods among women declined more often
    candidate = report(spec, data, prob, 0.3)
    gate = gates_by_name(GateSpec(), candidate, candidate, None)["max_tpr_difference"]
    gap = candidate["fairness"]["sex"]["tpr_difference"]["difference"]
    assert gate.actual == pytest.approx(gap) and gap > 0.15 and not gate.passed
    assert "sex: M" in gate.detail
    fair = report(spec, data, data["prob"].to_numpy(), 0.3)
    assert gates_by_name(GateSpec(), fair, fair, None)["max_tpr_difference"].passed

    one_group = data.assign(sex="F", age_band="25-34")
    lonely = report(spec, one_group, prob, 0.3)
    unmeasured = gates_by_name(GateSpec(), lonely, lonely, None)["max_tpr_difference"]
    assert unmeasured.actual is None and not unmeasured.passed
    assert "NOT MEASURABLE" in unmeasured.detail


def test_challenger_must_beat_the_champion_unless_the_spec_says_otherwise(spec):
    data = frame()
    candidate = report(spec, data, data["prob"].to_numpy(), 0.3)
    tie = gates_by_name(GateSpec(), candidate, candidate, dict(candidate))
    assert tie["max_auc_drop_vs_champion"].passed  # within the tolerance ...
    assert not tie["min_auc_gain_over_champion"].passed  # ... but it does not beat it
    worse = dict(candidate, roc_auc=candidate["roc_auc"] - 0.01)
    assert gates_by_name(GateSpec(), candidate, candidate, worse)[
        "min_auc_gain_over_champion"
    ].passed
    margin = GateSpec(min_auc_gain_over_champion=0.02)
    assert not gates_by_name(margin, candidate, candidate, worse)[
        "min_auc_gain_over_champion"
    ].passed
    tolerant = GateSpec(challenger_must_beat_champion=False)
    gate = gates_by_name(tolerant, candidate, candidate, dict(candidate))[
        "min_auc_gain_over_champion"
    ]
    assert gate.passed and "not required" in gate.detail
    first = gates_by_name(GateSpec(), candidate, candidate, None)["min_auc_gain_over_champion"]
    assert first.passed and "no champion yet" in first.detail


def test_group_calibration_shows_a_miscalibrated_group():
    data = frame()
    prob = data["prob"].to_numpy().copy()
    older = (data["age_band"] == "35-44").to_numpy()
    prob[older] = prob[older] * 0.5
    rows = {r["group"]: r for r in group_calibration(data["target"], prob, data["age_band"], 30)}
    assert rows["35-44"]["gap"] < -0.05 < rows["18-24"]["gap"]
    assert rows["35-44"]["ece"] > rows["18-24"]["ece"]
    tiny = np.where(np.arange(len(data)) < 10, "tiny", "rest")
    small = {r["group"]: r for r in group_calibration(data["target"], prob, tiny, 30)}
    assert small["tiny"]["small"] and small["tiny"]["ece"] is None and small["tiny"]["n"] == 10


def test_models_compared_at_the_same_approval_rate():
    data = frame()
    y, prob = data["target"].to_numpy(), data["prob"].to_numpy()
    noisy = np.clip(prob + np.random.default_rng(1).normal(0, 0.2, len(prob)), 0, 1)
    table = at_same_approval_rate(y, {"candidate": prob, "baseline": noisy}, 0.7)
    for row in table.values():
        assert row["approval_rate"] == pytest.approx(0.7, abs=0.002)
    assert (
        table["candidate"]["bad_rate_among_approved"] < table["baseline"]["bad_rate_among_approved"]
    )
    assert table["candidate"]["cutoff"] != table["baseline"]["cutoff"]


def test_proxy_report_measures_the_score_and_the_attribute():
    data = frame()
    rng = np.random.default_rng(2)
    data["tenure"] = data["prob"] * 10 + rng.normal(0, 0.01, len(data))
    data["region"] = np.where(
        data["sex"] == "F", "north", rng.choice(["north", "south"], len(data))
    )

    class Proxy:
        def __init__(self, column, attribute, reason=""):
            self.column, self.attribute, self.reason = column, attribute, reason

    rows = proxy_report(
        data,
        data["prob"],
        [
            Proxy("tenure", "age_band", "tenure grows with age"),
            Proxy("region", "sex"),
            Proxy("x", "sex"),
        ],
    )
    tenure, region, missing = rows
    assert tenure["score_association"] > 0.99 and tenure["score_measure"] == "spearman"
    assert tenure["attribute_association"] < 0.1  # age bands were drawn independently
    assert region["attribute_measure"] == "Cramér's V" and region["attribute_association"] > 0.4
    assert missing["error"] == "'x' is not in the evaluated rows"


@pytest.mark.parametrize(
    "proxies, message",
    [
        ([{"column": "income_stability", "attribute": "purpose"}], "proxies[0].attribute"),
        ([{"column": "nope", "attribute": "sex"}], "'nope' is not a column or feature"),
        ([{"column": "email", "attribute": "sex"}], "'email' is PII"),
        ([{"column": "age_band", "attribute": "sex"}], "is a protected attribute"),
    ],
)
def test_bad_proxies_are_refused(tmp_path, proxies, message):
    data = yaml.safe_load(default_spec_path().read_text())
    data["proxies"] = proxies
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_spec(path)


def test_model_card_has_the_validator_sections(spec):
    data = frame()
    data["income_stability"] = np.random.default_rng(4).random(len(data))
    declared = spec.model_dump()
    declared["proxies"] = [
        {"column": "income_stability", "attribute": "age_band", "reason": "tenure grows with age"}
    ]
    spec = PipelineSpec.model_validate(declared)
    prob = data["prob"].to_numpy()
    candidate = report(spec, data, prob, 0.3)
    probs = {"candidate": prob, "baseline": np.clip(prob * 1.1, 0, 1)}
    figures = validator_figures(spec, data, probs, candidate)
    reports = {"candidate": candidate, "baseline": candidate, "champion": None}
    gates = evaluate_gates(spec.gates, candidate, candidate, None)
    card = model_card(spec, "4", {}, reports, gates, 0.3, None, figures)
    assert "## Calibration by protected group" in card and "| sex | F |" in card
    assert "## Compared at the same approval rate" in card and "| baseline |" in card
    assert "| income_stability | age_band |" in card and "tenure grows with age" in card
    assert "| min_brier_skill |" in card and "| max_tpr_difference |" in card
