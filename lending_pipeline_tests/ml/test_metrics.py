import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from lending_pipeline.ml.metrics import (
    adverse_impact_ratio,
    approval_rates,
    business_impact,
    calibration_table,
    choose_cutoff,
    confusion_at_cutoff,
    expected_calibration_error,
    gini,
    ks_statistic,
    score_report,
    true_positive_rate_difference,
)


def random_scores(n: int, seed: int = 0, decimals: int = 2):
    """Labels drawn from the scores (so the model is informative), rounded to create ties."""
    rng = np.random.default_rng(seed)
    prob = np.round(rng.beta(2, 5, n), decimals)
    y = (rng.random(n) < prob).astype(int)
    return y, prob


def bad_rate_below(y, prob, cutoff) -> float:
    approved = prob < cutoff
    return y[approved].mean() if approved.any() else 0.0


def test_ks_by_hand():
    y = [0, 0, 0, 1, 1, 1]
    prob = [0.1, 0.2, 0.4, 0.3, 0.6, 0.8]
    # CDF_good - CDF_bad at t = 0.1, 0.2, 0.3, 0.4, 0.6, 0.8:
    # 1/3-0, 2/3-0, 2/3-1/3, 1-1/3, 1-2/3, 1-1 -> max 2/3 (at t = 0.2 and t = 0.4)
    assert ks_statistic(y, prob) == pytest.approx(2 / 3)


def test_ks_does_not_split_ties_between_classes():
    y = [0, 0, 0, 1, 1, 1]
    prob = [0.2, 0.5, 0.5, 0.5, 0.5, 0.9]
    # t = 0.2: 1/3 - 0; t = 0.5: 3/3 - 2/3; t = 0.9: 1 - 1 -> max 1/3
    # (ordering the tied goods before the tied bads would wrongly give 3/3 - 0 = 1)
    assert ks_statistic(y, prob) == pytest.approx(1 / 3)


def test_ks_matches_sklearn_roc_curve_on_random_data():
    y, prob = random_scores(5000, seed=1)
    fpr, tpr, _ = roc_curve(y, prob)
    assert ks_statistic(y, prob) == pytest.approx(np.max(tpr - fpr))


def test_ks_is_separation_whatever_the_direction():
    assert ks_statistic([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert ks_statistic([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2]) == 1.0


def test_gini():
    assert gini(0.75) == pytest.approx(0.5)
    assert gini(0.5) == 0.0
    with pytest.raises(ValueError, match="auc"):
        gini(1.2)


def test_calibration_table_and_ece_by_hand():
    prob = [0.1, 0.1, 0.2, 0.2, 0.6, 0.6, 0.8, 0.8]
    y = [0, 0, 0, 1, 1, 1, 0, 1]
    table = calibration_table(y, prob, bins=2)
    assert list(table.columns) == ["bin", "count", "mean_predicted", "observed_rate"]
    assert table["count"].tolist() == [4, 4]
    # bin 0: mean_predicted (0.1+0.1+0.2+0.2)/4 = 0.15, observed 1/4 = 0.25
    # bin 1: mean_predicted (0.6+0.6+0.8+0.8)/4 = 0.70, observed 3/4 = 0.75
    assert table["mean_predicted"].tolist() == pytest.approx([0.15, 0.70])
    assert table["observed_rate"].tolist() == pytest.approx([0.25, 0.75])
    # ECE = 4/8 * |0.15 - 0.25| + 4/8 * |0.70 - 0.75| = 0.05 + 0.025
    assert expected_calibration_error(y, prob, bins=2) == pytest.approx(0.075)


def test_ece_weights_unequal_bins_by_count():
    prob = [0.1, 0.3, 0.3, 0.3, 0.3, 0.9]
    y = [0, 0, 1, 0, 0, 1]
    # median edge 0.3; bins are right-closed, so all tied 0.3s join bin 0
    assert calibration_table(y, prob, bins=2)["count"].tolist() == [5, 1]
    # bin 0: mean (0.1 + 4 * 0.3) / 5 = 0.26, observed 1/5 = 0.2; bin 1: 0.9 vs observed 1.0
    # ECE = 5/6 * 0.06 + 1/6 * 0.1 = 0.05 + 0.01666...
    assert expected_calibration_error(y, prob, bins=2) == pytest.approx(0.05 + 0.1 / 6)


def test_calibration_with_fewer_distinct_values_than_bins():
    prob = [0.2] * 5 + [0.7] * 5
    y = [0, 0, 0, 0, 1] + [1, 1, 1, 0, 0]
    table = calibration_table(y, prob, bins=10)
    assert table["bin"].tolist() == [0, 1]
    assert table["count"].tolist() == [5, 5]
    # 5/10 * |0.2 - 1/5| + 5/10 * |0.7 - 3/5| = 0 + 0.05
    assert expected_calibration_error(y, prob, bins=10) == pytest.approx(0.05)
    single = calibration_table([0, 1, 1, 0], [0.5] * 4, bins=10)
    assert single["count"].tolist() == [4]


def test_calibration_bins_are_equal_count_and_keep_ties_together():
    y, prob = random_scores(1000, seed=2, decimals=6)
    assert calibration_table(y, prob, bins=10)["count"].tolist() == [100] * 10
    y, prob = random_scores(1000, seed=2, decimals=1)
    table = calibration_table(y, prob, bins=10)
    assert table["count"].sum() == 1000
    # each distinct value lands in exactly one bin, so bins are at most as many as values
    assert len(table) <= len(np.unique(prob))
    assert table["mean_predicted"].is_monotonic_increasing


def test_approval_rates_with_null_groups():
    prob = [0.1, 0.9, 0.2, 0.3, 0.8]
    group = ["a", "a", None, np.nan, 1]
    # a: 1 of 2 approved; unknown (None, nan): both approved; "1": declined
    assert approval_rates(prob, 0.5, group) == {"1": 0.0, "a": 0.5, "unknown": 1.0}


def adverse_impact_fixture():
    prob = (
        [0.2] * 30 + [0.7] * 10  # A: 40 members, 30 approved
        + [0.2] * 20 + [0.5] * 20  # B: 40 members, 20 approved (0.5 == cutoff is declined)
        + [0.9] * 10  # C: 10 members, none approved
    )  # fmt: skip
    group = ["A"] * 40 + ["B"] * 40 + ["C"] * 10
    return prob, group


def test_adverse_impact_ratio_by_hand_excludes_small_groups():
    prob, group = adverse_impact_fixture()
    result = adverse_impact_ratio(prob, 0.5, group, min_group_size=30)
    # A: 30/40 = 0.75 (reference); B: 20/40 = 0.5 -> ratio 0.5 / 0.75 = 2/3
    assert result["rates"] == {"A": 0.75, "B": 0.5}
    assert result["reference_group"] == "A"
    assert result["ratios"] == pytest.approx({"A": 1.0, "B": 2 / 3})
    assert result["min_ratio"] == pytest.approx(2 / 3)
    assert result["min_group"] == "B"
    assert result["excluded_small_groups"] == ["C"]
    # with C (0/10 approved) admitted, the minimum ratio becomes 0 / 0.75 = 0
    admitted = adverse_impact_ratio(prob, 0.5, group, min_group_size=10)
    assert (admitted["min_ratio"], admitted["min_group"]) == (0.0, "C")


def test_adverse_impact_ratio_degenerate_cases():
    prob, group = adverse_impact_fixture()
    one = adverse_impact_ratio(prob, 0.5, group, min_group_size=41)
    assert one["rates"] == {}
    assert (one["min_ratio"], one["min_group"]) == (1.0, None)
    nobody = adverse_impact_ratio(prob, 0.0, group, min_group_size=10)
    assert nobody["ratios"] == {"A": 1.0, "B": 1.0, "C": 1.0}
    assert nobody["min_ratio"] == 1.0


def test_true_positive_rate_difference_by_hand():
    y = [0, 0, 0, 0, 1, 1] + [0, 0, 0, 0, 1, 1] + [0, 0]
    prob = [0.1, 0.1, 0.1, 0.9, 0.9, 0.9] + [0.1, 0.9, 0.9, 0.9, 0.1, 0.1] + [0.9, 0.9]
    group = ["X"] * 6 + ["Y"] * 6 + ["Z"] * 2
    result = true_positive_rate_difference(y, prob, 0.5, group, min_group_size=3)
    # goods approved: X 3/4 = 0.75, Y 1/4 = 0.25 (bads ignored), Z has only 2 goods -> excluded
    assert result["rates"] == {"X": 0.75, "Y": 0.25}
    assert result["difference"] == pytest.approx(0.5)
    assert result["excluded_small_groups"] == ["Z"]
    none_qualify = true_positive_rate_difference(y, prob, 0.5, group, min_group_size=5)
    assert (none_qualify["rates"], none_qualify["difference"]) == ({}, 0.0)


CONFUSION_Y = [0, 0, 0, 1, 1, 0, 1, 0]
CONFUSION_PROB = [0.1, 0.2, 0.6, 0.3, 0.7, 0.4, 0.9, 0.5]


def test_confusion_at_cutoff_by_hand():
    result = confusion_at_cutoff(CONFUSION_Y, CONFUSION_PROB, 0.5)
    # declined (prob >= 0.5): 0.6 good, 0.7 bad, 0.9 bad, 0.5 good; approved: 0.1, 0.2, 0.3 bad, 0.4
    assert result == pytest.approx(
        {
            "precision": 2 / 4,  # bads among declined
            "recall": 2 / 3,  # declined bads / all bads
            "approval_rate": 4 / 8,
            "bad_rate_among_approved": 1 / 4,
            "declined_good_rate": 2 / 5,  # declined goods / all goods
        }
    )
    nobody = confusion_at_cutoff(CONFUSION_Y, CONFUSION_PROB, 0.0)
    assert (nobody["approval_rate"], nobody["bad_rate_among_approved"]) == (0.0, 0.0)


def test_business_impact_by_hand():
    exposure = [100, 200, 300, 400, 500, 600, 700, 800]
    result = business_impact(CONFUSION_Y, CONFUSION_PROB, 0.5, exposure, loss_given_default=0.5)
    # approved: prob 0.1, 0.2, 0.3, 0.4 with exposure 100, 200, 400, 600; only the 0.3 one is bad
    # expected: (10 + 40 + 120 + 240) * 0.5 / 4 = 51.25; realised: 400 * 0.5 / 4 = 50
    assert result == pytest.approx(
        {
            "approval_rate": 0.5,
            "bad_rate_among_approved": 0.25,
            "expected_loss_among_approved": 51.25,
            "realised_loss_among_approved": 50.0,
            "approved_count": 4,
            "declined_count": 4,
        }
    )
    unit = business_impact(CONFUSION_Y, CONFUSION_PROB, 0.5)
    # unit exposure, lgd 0.6: expected (0.1 + 0.2 + 0.3 + 0.4) * 0.6 / 4 = 0.15
    assert unit["expected_loss_among_approved"] == pytest.approx(0.15)


def test_choose_cutoff_target_approval_rate():
    prob = np.random.default_rng(3).permutation(np.arange(100) / 100)
    y = np.zeros(100, dtype=int)
    y[:10] = 1
    cutoff = choose_cutoff(y, prob, target_approval_rate=0.3)
    assert cutoff == pytest.approx(np.quantile(prob, 0.3))
    assert np.mean(prob < cutoff) == 0.3
    assert np.mean(prob < choose_cutoff(y, prob, target_approval_rate=1.0)) == 1.0
    assert np.mean(prob < choose_cutoff(y, prob, target_approval_rate=0.0)) == 0.0


def test_choose_cutoff_max_bad_rate_by_hand_takes_the_highest_not_the_first():
    prob = [0.1, 0.2, 0.3, 0.4, 0.5]
    y = [0, 0, 1, 0, 1]
    # bad rate among approved at cutoff 0.2: 0/1, 0.3: 0/2, 0.4: 1/3, 0.5: 1/4, above 0.5: 2/5
    # -> highest cutoff with bad rate <= 0.25 is 0.5, although 0.4 already breaks the limit
    assert choose_cutoff(y, prob, max_bad_rate=0.25) == 0.5


def test_choose_cutoff_max_bad_rate_is_the_highest_feasible_on_random_data():
    y, prob = random_scores(20_000, seed=4)
    limit = 0.15
    cutoff = choose_cutoff(y, prob, max_bad_rate=limit)
    assert bad_rate_below(y, prob, cutoff) <= limit
    higher = np.unique(prob)[np.unique(prob) > cutoff]
    assert bad_rate_below(y, prob, higher[0]) > limit
    candidates = [*np.unique(prob), np.inf]
    feasible = [c for c in candidates if bad_rate_below(y, prob, c) <= limit]
    assert cutoff == feasible[-1]


def test_choose_cutoff_on_a_million_rows():
    y, prob = random_scores(1_000_000, seed=5, decimals=8)
    cutoff = choose_cutoff(y, prob, max_bad_rate=0.1)
    assert bad_rate_below(y, prob, cutoff) <= 0.1
    assert bad_rate_below(y, prob, np.min(prob[prob > cutoff])) > 0.1


def test_choose_cutoff_approves_everyone_when_the_limit_allows():
    y, prob = [0, 1, 0, 0], [0.1, 0.2, 0.3, 1.0]
    assert np.mean(np.array(prob) < choose_cutoff(y, prob, max_bad_rate=0.25)) == 1.0


def assert_plain_json(value, path="report"):
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, path
            assert_plain_json(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_plain_json(item, f"{path}[{i}]")
    else:
        assert type(value) in (float, int, str, bool, type(None)), (path, type(value))


def test_score_report_matches_sklearn_and_is_plain_json():
    y, prob = random_scores(3000, seed=6)
    rng = np.random.default_rng(7)
    groups = {
        "sex": rng.choice(np.array(["F", "M", None], dtype=object), size=y.size),
        "age_band": rng.choice([1, 2, 3, 4], size=y.size),
    }
    groups["age_band"][:10] = 9  # a group of 10, below the default min_group_size of 30
    report = score_report(y, prob, 0.4, groups=groups, exposure=rng.uniform(1e3, 1e4, y.size))
    assert report["roc_auc"] == pytest.approx(roc_auc_score(y, prob))
    assert report["gini"] == pytest.approx(2 * roc_auc_score(y, prob) - 1)
    assert report["pr_auc"] == pytest.approx(average_precision_score(y, prob))
    assert report["brier"] == pytest.approx(brier_score_loss(y, prob))
    assert report["ks"] == pytest.approx(ks_statistic(y, prob))
    assert report["recall"] == pytest.approx(confusion_at_cutoff(y, prob, 0.4)["recall"])
    assert report["approved_count"] + report["declined_count"] == y.size
    assert set(report["fairness"]) == {"sex", "age_band"}
    assert set(report["fairness"]["sex"]["adverse_impact"]["rates"]) == {"F", "M", "unknown"}
    assert report["fairness"]["age_band"]["adverse_impact"]["excluded_small_groups"] == ["9"]
    assert_plain_json(report)
    assert json.loads(json.dumps(report)) == report


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ks_statistic([0, 1, 1], [0.1, 0.2]), "shape"),
        (lambda: ks_statistic([1, 1], [0.1, 0.2]), "both goods"),
        (lambda: ks_statistic([], []), "empty"),
        (lambda: ks_statistic([0, 2], [0.1, 0.2]), "only 0"),
        (lambda: ks_statistic([0, 1], [0.1, np.nan]), "NaN"),
        (lambda: ks_statistic([0, 1], [0.1, 1.5]), r"\[0, 1\]"),
        (lambda: calibration_table([], []), "empty"),
        (lambda: calibration_table([0, 1], [0.1, 0.2], bins=0), "bins"),
        (lambda: approval_rates([0.1, 0.2], 0.5, ["a"]), "group"),
        (lambda: adverse_impact_ratio([0.1], 0.5, ["a"], min_group_size=0), "min_group_size"),
        (lambda: true_positive_rate_difference([1, 1], [0.1, 0.2], 0.5, ["a", "b"]), "good"),
        (lambda: confusion_at_cutoff([0, 0], [0.1, 0.2], 0.5), "both goods"),
        (lambda: business_impact([0, 1], [0.1, 0.2], 0.5, exposure=[1]), "exposure"),
        (lambda: business_impact([0, 1], [0.1, 0.2], 0.5, loss_given_default=2), "loss_given"),
        (lambda: choose_cutoff([0, 1], [0.1, 0.2]), "exactly one"),
        (lambda: choose_cutoff([0, 1], [0.1, 0.2], 0.1, 0.5), "exactly one"),
        (lambda: choose_cutoff([0, 1], [0.1, 0.2], target_approval_rate=1.5), r"\[0, 1\]"),
        (lambda: score_report([0, 0, 0], [0.1, 0.2, 0.3], 0.5), "both goods"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
