"""Evaluation plots: real PNGs from scored data; the reliability bins they draw."""

import numpy as np

from lending_pipeline.ml.plots import approval_rates, evaluation_plots, reliability

PNG = b"\x89PNG\r\n\x1a\n"


def scored(n: int = 4_000, seed: int = 3):
    rng = np.random.default_rng(seed)
    prob = rng.beta(1.5, 12, n)
    y = (rng.random(n) < prob).astype(int)
    return y, prob


def test_reliability_of_calibrated_scores_follows_the_diagonal():
    y, prob = scored(40_000)
    predicted, observed = reliability(y, prob)
    assert len(predicted) == 10 and np.all(np.diff(predicted) > 0)
    assert np.max(np.abs(predicted - observed)) < 0.03


def test_evaluation_plots_are_pngs(tmp_path):
    y, prob = scored()
    report = {
        "roc_auc": 0.71,
        "ece": 0.012,
        "cutoff": 0.2,
        "fairness": {
            "age_band": {"adverse_impact": {"rates": {"18-25": 0.61, "26-40": 0.74}}},
        },
    }
    assert approval_rates(report) == {"age_band": {"18-25": 0.61, "26-40": 0.74}}
    plots = evaluation_plots(y, prob, report, tmp_path / "plots")
    assert list(plots) == ["ROC", "Calibration", "PD by outcome", "Approval rate by group"]
    for path in plots.values():
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000, path
    empty = evaluation_plots(y, prob, {**report, "fairness": {}}, tmp_path / "none")
    assert empty["Approval rate by group"].read_bytes().startswith(PNG)
