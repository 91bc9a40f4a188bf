"""Bootstrap intervals of the gated metrics, gates on the conservative bound, evidence warnings."""

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import brier_score_loss, roc_auc_score

from lending_pipeline.ml.evaluate import evaluate_gates, gate_intervals, model_card, report
from lending_pipeline.ml.evidence import landed_split_counts, spec_warnings, split_shortfalls
from lending_pipeline.ml.metrics import expected_calibration_error, ks_statistic
from lending_pipeline.ml.uncertainty import _Sorted, bootstrap_intervals, resample_counts
from lending_pipeline.spec import GateSpec, PipelineSpec, SpecError, default_spec_path, load_spec


def sample(n, seed=0, signal=0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    prob = np.clip(0.15 + signal * y + rng.normal(0, 0.15, n), 0.001, 0.999).round(3)
    return y, prob, rng


def with_gates(spec: PipelineSpec, **gates) -> PipelineSpec:
    data = spec.model_dump()
    data["gates"] = {**data["gates"], **gates}
    return PipelineSpec.model_validate(data)


@pytest.mark.parametrize("tied", [True, False])
def test_unit_counts_reproduce_the_full_sample_metrics(tied):
    y, prob, rng = sample(3000)
    if not tied:
        prob = np.clip(prob + rng.uniform(0, 1e-4, prob.size), 0, 1)
        assert np.unique(prob).size == prob.size
    values = _Sorted(y, prob, 10).metrics(np.ones((1, y.size), dtype=int))
    rate = y.mean()
    assert values["roc_auc"][0] == pytest.approx(roc_auc_score(y, prob), abs=1e-12)
    assert values["ks"][0] == pytest.approx(ks_statistic(y, prob), abs=1e-12)
    assert values["ece"][0] == pytest.approx(expected_calibration_error(y, prob), abs=1e-12)
    skill = 1 - brier_score_loss(y, prob) / (rate * (1 - rate))
    assert values["brier_skill"][0] == pytest.approx(skill, abs=1e-12)


def test_resample_counts_draw_n_rows_each():
    counts = resample_counts(np.random.default_rng(1), 50, 7)
    assert counts.shape == (7, 50) and (counts.sum(axis=1) == 50).all()
    assert len({tuple(row) for row in counts}) == 7


def test_intervals_are_seeded_cover_the_estimate_and_shrink_with_rows():
    y, prob, rng = sample(400)
    group = rng.choice(["a", "b"], y.size)
    args = (y, {"candidate": prob}, prob < 0.3, {"g": group})
    first = bootstrap_intervals(*args, resamples=150, seed=3)
    again = bootstrap_intervals(*args, resamples=150, seed=3)
    other = bootstrap_intervals(*args, resamples=150, seed=4)
    assert first == again and first["roc_auc"] != other["roc_auc"]
    for name in ("roc_auc", "ks", "ece", "brier_skill", "min_adverse_impact_ratio"):
        assert first[name].low <= first[name].high
        assert first[name].resamples == 150
    auc = roc_auc_score(y, prob)
    assert first["roc_auc"].low < auc < first["roc_auc"].high
    y_big, prob_big, _ = sample(20_000, seed=1)
    big = bootstrap_intervals(y_big, {"candidate": prob_big}, prob_big < 0.3, resamples=150)
    width = first["roc_auc"].high - first["roc_auc"].low
    assert big["roc_auc"].high - big["roc_auc"].low < width / 3


def test_fairness_interval_sees_a_disadvantaged_group():
    y, prob, rng = sample(3000)
    group = np.where(rng.random(y.size) < 0.5, "a", "b")
    prob = np.where(group == "b", np.minimum(prob + 0.08, 0.999), prob)
    intervals = bootstrap_intervals(y, {"candidate": prob}, prob < 0.3, {"g": group})
    rates = [np.mean(prob[group == g] < 0.3) for g in ("a", "b")]
    air = min(rates) / max(rates)
    assert (
        intervals["min_adverse_impact_ratio"].low < air < intervals["min_adverse_impact_ratio"].high
    )
    assert intervals["min_adverse_impact_ratio"].high < 1.0
    few = np.where(np.arange(y.size) < 10, "tiny", "rest")
    lonely = bootstrap_intervals(y, {"candidate": prob}, prob < 0.3, {"g": few})
    assert "min_adverse_impact_ratio" not in lonely  # one qualifying group: nothing to compare


def test_paired_differences_against_baseline_and_champion():
    y, prob, rng = sample(2000)
    weaker = np.clip(prob + rng.normal(0, 0.2, y.size), 0, 1)
    intervals = bootstrap_intervals(
        y, {"candidate": prob, "baseline": weaker, "champion": weaker}, prob < 0.3
    )
    margin = roc_auc_score(y, prob) - roc_auc_score(y, weaker)
    assert intervals["auc_margin_over_baseline"].low > 0
    assert intervals["auc_margin_over_baseline"].low < margin
    assert intervals["auc_drop_vs_champion"].high < 0


def test_lucky_small_split_passes_on_the_estimate_but_not_on_the_bound(spec):
    y, prob, rng = sample(160, seed=5, signal=0.2)
    frame = pd.DataFrame({"target": y, "age_band": "25-34", "sex": rng.choice(["F", "M"], y.size)})
    frame["loan_amount"] = 1000.0
    candidate = report(spec, frame, prob, 0.3)
    assert candidate["roc_auc"] > 0.70
    threshold = 0.70
    reports = {"candidate": candidate, "baseline": candidate, "champion": None}
    plain = with_gates(spec, min_roc_auc=threshold, min_auc_margin_over_baseline=-1)
    intervals = gate_intervals(plain, frame, {"candidate": prob}, 0.3, reports)
    assert intervals["roc_auc"].low < threshold < intervals["roc_auc"].estimate
    on_estimate = {
        g.gate: g for g in evaluate_gates(plain.gates, candidate, candidate, None, intervals)
    }
    assert on_estimate["min_roc_auc"].passed and on_estimate["min_roc_auc"].judged_on == "estimate"
    strict = with_gates(plain, judge_on={"min_roc_auc": "conservative_bound"})
    judged = {
        g.gate: g for g in evaluate_gates(strict.gates, candidate, candidate, None, intervals)
    }
    gate = judged["min_roc_auc"]
    assert not gate.passed and gate.judged == intervals["roc_auc"].low
    assert "judged on the interval's bound" in gate.describe()
    strict_ece = with_gates(
        plain, max_ece=candidate["ece"] + 1e-6, judge_on={"max_ece": "conservative_bound"}
    )
    ece_gate = {
        g.gate: g for g in evaluate_gates(strict_ece.gates, candidate, candidate, None, intervals)
    }
    assert not ece_gate["max_ece"].passed and ece_gate["max_ece"].judged == intervals["ece"].high
    card = model_card(strict, "9", {}, reports, list(judged.values()), 0.3, intervals)
    assert "| min_roc_auc |" in card and "conservative_bound" in card
    assert f"[{intervals['roc_auc'].low:.4f}, {intervals['roc_auc'].high:.4f}]" in card
    assert "## Uncertainty" in card and "| brier_skill |" in card


def test_no_resamples_no_intervals(spec):
    y, prob, rng = sample(300)
    frame = pd.DataFrame({"target": y, "age_band": "25-34", "sex": rng.choice(["F", "M"], y.size)})
    frame["loan_amount"] = 1000.0
    off = with_gates(spec, bootstrap_resamples=0)
    candidate = report(off, frame, prob, 0.3)
    reports = {"candidate": candidate, "baseline": candidate, "champion": None}
    assert gate_intervals(off, frame, {"candidate": prob}, 0.3, reports) == {}
    gates = evaluate_gates(off.gates, candidate, candidate, None, {})
    assert all(g.low is None and g.judged_on == "estimate" for g in gates)


@pytest.mark.parametrize(
    "gates, message",
    [
        ({"judge_on": {"min_gini": "conservative_bound"}}, "judge_on.min_gini: not a gate"),
        (
            {"bootstrap_resamples": 0, "judge_on": {"min_ks": "conservative_bound"}},
            "needs bootstrap_resamples >= 1",
        ),
        ({"judge_on": {"min_ks": "lower"}}, "judge_on.min_ks"),
        ({"confidence_level": 1.0}, "confidence_level"),
    ],
)
def test_bad_interval_settings_are_refused(tmp_path, gates, message):
    data = yaml.safe_load(default_spec_path().read_text())
    data["gates"].update(gates)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_shortfalls_name_the_split_and_the_fields_to_change(spec):
    counts = {"train": (10, 1), "validation": (5000, 400), "test": (600, 40)}
    messages = split_shortfalls(spec, counts)
    assert len(messages) == 2 and all(m.startswith("test split") for m in messages)
    assert "600 rows, fewer than gates.min_split_rows (1000)" in messages[0]
    assert "40 defaults, fewer than gates.min_split_defaults (100)" in messages[1]
    assert all("model.split.test_days (now 10)" in m for m in messages)
    assert split_shortfalls(spec, {"validation": (5000, 400), "test": (5000, 400)}) == []


def test_spec_warnings_from_the_spec_and_the_landed_labels(spec, tmp_path):
    assert spec_warnings(spec) == []
    short = spec.model_dump()
    short["model"]["split"] = {"validation_days": 3, "test_days": 10}
    short["gates"] |= {"bootstrap_resamples": 50, "judge_on": {"min_ks": "conservative_bound"}}
    warnings = spec_warnings(PipelineSpec.model_validate(short))
    assert any("model.split.validation_days is 3" in w for w in warnings)
    assert any("gates.bootstrap_resamples is 50" in w for w in warnings)
    outcomes = tmp_path / "landing" / "outcomes"
    outcomes.mkdir(parents=True)
    for i in range(25):
        day = f"2025-03-{i + 1:02d}"
        flags = [1] * 3 + [0] * 47
        pd.DataFrame(
            {"application_id": range(50), "observation_date": day, "default_flag": flags}
        ).to_csv(outcomes / f"{day}.csv", index=False)
    counts = landed_split_counts(spec, tmp_path)
    assert counts == {"test": (500, 30), "validation": (500, 30)}
    landed = spec_warnings(spec, tmp_path)
    assert any(
        w.startswith("test split: 500 rows") and "landed outcomes files" in w for w in landed
    )


def test_gate_spec_defaults_keep_estimates():
    gates = GateSpec()
    assert gates.judge_on == {} and gates.bootstrap_resamples > 0


def test_spec_command_prints_the_warnings(tmp_path, capsys):
    from lending_pipeline.cli import main

    data = yaml.safe_load(default_spec_path().read_text())
    data["model"]["split"]["test_days"] = 3
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["spec", str(path), "--data-dir", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert "warning: model.split.test_days is 3" in out
