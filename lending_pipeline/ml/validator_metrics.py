"""What a model validator asks beyond the gates' headline figures: calibration per protected
group, the models compared at the same approval rate, and declared proxies of protected
attributes with their correlation to the score. Plain functions over arrays and frames; results
are aggregates (never a row's values).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lending_pipeline.ml.metrics import (
    UNKNOWN_GROUP,
    choose_cutoff,
    confusion_at_cutoff,
    expected_calibration_error,
)


def _group_values(values) -> np.ndarray:
    g = np.asarray(values, dtype=object)
    return np.where(pd.isna(g), UNKNOWN_GROUP, g.astype(str))


def group_calibration(y_true, prob, group, min_group_size: int = 30, bins: int = 5) -> list[dict]:
    """Per group: size, mean predicted PD, observed default rate, their gap and the group's ECE
    (`bins` quantile bins; only for groups of at least `min_group_size`, others marked small)."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, dtype=float)
    g = _group_values(group)
    rows = []
    for name in sorted(set(g)):
        mask = g == name
        n = int(mask.sum())
        row = {
            "group": name,
            "n": n,
            "mean_predicted": float(p[mask].mean()),
            "observed_rate": float(y[mask].mean()),
            "small": n < min_group_size,
        }
        row["gap"] = row["mean_predicted"] - row["observed_rate"]
        row["ece"] = None if row["small"] else expected_calibration_error(y[mask], p[mask], bins)
        rows.append(row)
    return rows


def at_same_approval_rate(y_true, probs: dict[str, np.ndarray], approval_rate: float) -> dict:
    """Each model with its own cutoff chosen to approve `approval_rate` of the rows (the
    candidate's rate at its cutoff): approval rate reached, bad rate among approved, and the
    share of goods declined. Compares ranking where it matters, at equal volume."""
    y = np.asarray(y_true).astype(int)
    rate = min(max(float(approval_rate), 0.0), 1.0)
    result = {}
    for name, prob in probs.items():
        cutoff = choose_cutoff(y, prob, target_approval_rate=rate)
        figures = confusion_at_cutoff(y, prob, cutoff)
        result[name] = {
            "cutoff": float(cutoff),
            "approval_rate": figures["approval_rate"],
            "bad_rate_among_approved": figures["bad_rate_among_approved"],
            "declined_good_rate": figures["declined_good_rate"],
        }
    return result


def _correlation_ratio(values: np.ndarray, categories: np.ndarray) -> float:
    """η: the share of the variance of `values` explained by `categories`, square-rooted."""
    frame = pd.DataFrame({"v": values, "c": categories}).dropna()
    if len(frame) < 2 or frame["v"].var() == 0:
        return 0.0
    means = frame.groupby("c")["v"].agg(["mean", "size"])
    between = (means["size"] * (means["mean"] - frame["v"].mean()) ** 2).sum()
    total = ((frame["v"] - frame["v"].mean()) ** 2).sum()
    return float(np.sqrt(between / total))


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    table = pd.crosstab(a, b).to_numpy(dtype=float)
    if min(table.shape) < 2:
        return 0.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    return float(np.sqrt(chi2 / table.sum() / (min(table.shape) - 1)))


def proxy_report(frame: pd.DataFrame, prob, proxies: list) -> list[dict]:
    """For each declared proxy (`column`, `attribute`, `reason`): its association with the score
    (Spearman correlation for a numeric column, correlation ratio η for a categorical one) and
    with the protected attribute it may stand for (η for numeric, Cramér's V for categorical)."""
    p = np.asarray(prob, dtype=float)
    rows = []
    for proxy in proxies:
        row = {"column": proxy.column, "attribute": proxy.attribute, "reason": proxy.reason}
        if proxy.column not in frame or proxy.attribute not in frame:
            missing = proxy.column if proxy.column not in frame else proxy.attribute
            rows.append(row | {"error": f"'{missing}' is not in the evaluated rows"})
            continue
        values = frame[proxy.column]
        attribute = _group_values(frame[proxy.attribute])
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            numeric = values.astype(float).to_numpy()
            ranked = pd.Series(numeric).rank()
            score = float(ranked.corr(pd.Series(p).rank())) if ranked.nunique() > 1 else 0.0
            row |= {
                "score_association": 0.0 if np.isnan(score) else score,
                "score_measure": "spearman",
                "attribute_association": _correlation_ratio(numeric, attribute),
                "attribute_measure": "correlation ratio",
            }
        else:
            categories = _group_values(values)
            row |= {
                "score_association": _correlation_ratio(p, categories),
                "score_measure": "correlation ratio",
                "attribute_association": _cramers_v(categories, attribute),
                "attribute_measure": "Cramér's V",
            }
        rows.append(row)
    return rows
