import numpy as np
import pandas as pd

from lending_pipeline.ml.evaluate import (
    GATES,
    evaluate_gates,
    model_card,
    report,
)
from lending_pipeline.spec import GateSpec


def frame(seed=0, n=600):
    rng = np.random.default_rng(seed)
    target = (rng.random(n) < 0.15).astype(int)
    return pd.DataFrame(
        {
            "application_id": [f"A{i}" for i in range(n)],
            "target": target,
            "prob": np.clip(0.1 + 0.4 * target + rng.normal(0, 0.15, n), 0.001, 0.999),
            "age_band": rng.choice(["18-24", "25-34", "35-44"], n),
            "sex": rng.choice(["F", "M"], n),
            "loan_amount": rng.uniform(1000, 20000, n),
        }
    )


def test_gates_compare_actual_with_threshold(spec):
    data = frame()
    candidate = report(spec, data, data["prob"].to_numpy(), 0.3)
    weaker = dict(candidate, roc_auc=candidate["roc_auc"] - 0.05)
    results = {g.gate: g for g in evaluate_gates(GateSpec(), candidate, weaker, None)}
    assert set(results) == set(GATES)
    assert results["min_roc_auc"].passed and results["min_roc_auc"].actual == candidate["roc_auc"]
    assert results["max_auc_drop_vs_champion"].actual is None
    unmeasured = results["max_auc_drop_vs_champion"].describe()
    assert "not measured" in unmeasured and "n/a" not in unmeasured
    assert "no champion yet" in unmeasured
    assert np.isclose(results["min_auc_margin_over_baseline"].actual, 0.05)

    champion = dict(candidate, roc_auc=candidate["roc_auc"] + 0.02)
    strict = GateSpec(min_roc_auc=0.999, max_ece=0.0)
    failed = {g.gate for g in evaluate_gates(strict, candidate, weaker, champion) if not g.passed}
    assert failed == {
        "min_roc_auc",
        "max_ece",
        "max_auc_drop_vs_champion",
        "min_auc_gain_over_champion",
    }


def test_model_card_lists_gates_fairness_and_lineage(spec):
    data = frame()
    candidate = report(spec, data, data["prob"].to_numpy(), 0.3)
    gates = evaluate_gates(GateSpec(), candidate, candidate, None)
    card = model_card(
        spec,
        "3",
        {"dagster_run_id": "run-1"},
        {"candidate": candidate, "baseline": candidate, "champion": None},
        gates,
        0.3,
    )
    assert card.startswith("# Model card: consumer_loan v3")
    assert "`run-1`" in card and "min_adverse_impact_ratio" in card and "| sex | F |" in card
    assert "## Limitations" in card
