"""The one decision rule shared by evaluation, fairness, business metrics and serving."""

import numpy as np
import pytest

from lending_pipeline.ml import metrics
from lending_pipeline.ml.decision import APPROVE, DECLINE, REFER, approved, decide, decide_many


@pytest.mark.parametrize(
    ("prob", "expected"),
    [(0.0999, APPROVE), (0.1, REFER), (0.2, REFER), (0.3, REFER), (0.3001, DECLINE)],
)
def test_ties_at_the_cutoff_refer_and_at_the_limit_refer(prob, expected):
    assert decide(prob, 0.1, 0.3) == expected
    assert decide_many([prob], 0.1, 0.3) == [expected]


def test_without_a_limit_what_is_not_approved_is_declined():
    assert decide_many([0.05, 0.1, 0.9], 0.1) == [APPROVE, DECLINE, DECLINE]
    assert [decide(p, 0.1) for p in (0.05, 0.1, 0.9)] == [APPROVE, DECLINE, DECLINE]


def test_a_limit_below_the_cutoff_wins():
    assert decide(0.25, 0.3, 0.2) == DECLINE == decide_many([0.25], 0.3, 0.2)[0]


def test_every_metric_counts_a_tie_as_not_approved():
    """Calibrated probabilities tie: half the applications sit exactly on the cutoff."""
    prob = np.array([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.2, 0.2])
    y = np.array([0, 1, 0, 0, 0, 0, 1, 0])
    group = np.array(["a", "a", "b", "b", "a", "b", "a", "b"])
    served = decide_many(prob, 0.1, 0.3)
    served_rate = np.mean([d == APPROVE for d in served])
    assert served_rate == approved(prob, 0.1).mean() == 0.25
    assert metrics.business_impact(y, prob, 0.1)["approval_rate"] == served_rate
    assert metrics.confusion_at_cutoff(y, prob, 0.1)["approval_rate"] == served_rate
    assert metrics.approval_rates(prob, 0.1, group) == {"a": 0.25, "b": 0.25}
    impact = metrics.adverse_impact_ratio(prob, 0.1, group, min_group_size=1)
    assert impact["rates"] == {"a": 0.25, "b": 0.25}
