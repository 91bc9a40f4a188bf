"""Model-risk metrics for credit-risk models: discrimination, calibration, fairness, impact.

Conventions: ``y_true`` is 1 for a default ("bad") and 0 for a good loan; ``prob`` is the
predicted probability of default; an application is approved or not by the one decision rule
(`decision.approved`: ``prob < cutoff``; refer and decline both count as not approved).
Functions return plain Python values (JSON-friendly) and raise ``ValueError`` on empty input,
mismatched lengths, or a single class where both are needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from lending_pipeline.ml.decision import approved as approved_at

UNKNOWN_GROUP = "unknown"


def _prob(prob) -> np.ndarray:
    p = np.asarray(prob, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"prob must be one-dimensional, got shape {p.shape}")
    if p.size == 0:
        raise ValueError("prob is empty")
    if not np.isfinite(p).all():
        raise ValueError("prob contains NaN or infinite values")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"prob must lie in [0, 1], got range [{p.min()}, {p.max()}]")
    return p


def _labels(y_true, n: int) -> np.ndarray:
    y = np.asarray(y_true)
    if y.shape != (n,):
        raise ValueError(f"y_true has shape {y.shape} but prob has {n} values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 (good) and 1 (bad)")
    return y.astype(int)


def _both_classes(y: np.ndarray, metric: str) -> None:
    if y.min() == y.max():
        raise ValueError(f"{metric} needs both goods (0) and bads (1) in y_true; got only {y[0]}")


def _groups(group, n: int) -> np.ndarray:
    g = np.asarray(group, dtype=object)
    if g.shape != (n,):
        raise ValueError(f"group has shape {g.shape} but prob has {n} values")
    return np.where(pd.isna(g), UNKNOWN_GROUP, g.astype(str))


def _group_rates(approved: np.ndarray, groups: np.ndarray) -> tuple[dict, dict]:
    stats = pd.Series(approved).groupby(groups).agg(["mean", "size"])
    rates = {str(g): float(r) for g, r in stats["mean"].items()}
    sizes = {str(g): int(s) for g, s in stats["size"].items()}
    return rates, sizes


def _split_by_size(sizes: dict, min_group_size: int) -> tuple[list[str], list[str]]:
    if min_group_size < 1:
        raise ValueError(f"min_group_size must be >= 1, got {min_group_size}")
    keep = [g for g, s in sizes.items() if s >= min_group_size]
    return keep, [g for g in sizes if g not in keep]


def ks_statistic(y_true, prob) -> float:
    """Kolmogorov-Smirnov separation: max over thresholds t of |CDF_bad(t) - CDF_good(t)|."""
    p = _prob(prob)
    y = _labels(y_true, p.size)
    _both_classes(y, "KS")
    thresholds = np.unique(p)
    bad, good = np.sort(p[y == 1]), np.sort(p[y == 0])
    cdf_bad = np.searchsorted(bad, thresholds, side="right") / bad.size
    cdf_good = np.searchsorted(good, thresholds, side="right") / good.size
    return float(np.max(np.abs(cdf_bad - cdf_good)))


def gini(auc: float) -> float:
    """Gini coefficient (accuracy ratio) from ROC AUC: 2 * auc - 1."""
    if not 0.0 <= auc <= 1.0:
        raise ValueError(f"auc must lie in [0, 1], got {auc}")
    return float(2 * auc - 1)


def brier_skill_score(y_true, prob) -> float:
    """Brier skill over the no-skill forecast (everyone given the sample's default rate):
    1 - Brier / (rate * (1 - rate)); 0 is no better than that forecast, 1 is perfect."""
    p = _prob(prob)
    y = _labels(y_true, p.size)
    _both_classes(y, "Brier skill")
    rate = y.mean()
    return float(1 - np.mean((p - y) ** 2) / (rate * (1 - rate)))


def calibration_table(y_true, prob, bins: int = 10) -> pd.DataFrame:
    """Equal-count quantile bins of prob with mean prediction and observed default rate.

    Bins are right-closed between quantile edges, so tied probabilities always share a bin;
    with ties or fewer distinct values than ``bins``, fewer (non-empty) bins are returned.
    """
    p = _prob(prob)
    y = _labels(y_true, p.size)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1]))
    codes = np.searchsorted(edges, p, side="left")
    table = (
        pd.DataFrame({"code": codes, "p": p, "y": y})
        .groupby("code")
        .agg(count=("p", "size"), mean_predicted=("p", "mean"), observed_rate=("y", "mean"))
        .reset_index(drop=True)
    )
    table.insert(0, "bin", range(len(table)))
    return table


def expected_calibration_error(y_true, prob, bins: int = 10) -> float:
    """Sum over calibration bins of count / n * |mean_predicted - observed_rate|."""
    t = calibration_table(y_true, prob, bins)
    weights = t["count"] / t["count"].sum()
    return float((weights * (t["mean_predicted"] - t["observed_rate"]).abs()).sum())


def approval_rates(prob, cutoff, group) -> dict[str, float]:
    """Approval rate (share with prob < cutoff) per group; null groups reported as "unknown"."""
    p = _prob(prob)
    return _group_rates(approved_at(p, cutoff), _groups(group, p.size))[0]


def adverse_impact_ratio(prob, cutoff, group, min_group_size: int = 30) -> dict:
    """Approval rate of each group relative to the most-approved group (four-fifths rule: < 0.8).

    Only groups with at least ``min_group_size`` members are compared; the rest are listed under
    ``excluded_small_groups`` (their rates under ``small_group_rates``; every group's size under
    ``group_sizes``). ``min_ratio`` is 1.0 and ``min_group`` None when fewer than two groups
    qualify: then ``measurable`` is False (nothing was compared; the gate must not pass on it).
    If the reference rate is 0 (nobody approved anywhere), every ratio is 1.0.
    """
    p = _prob(prob)
    all_rates, sizes = _group_rates(approved_at(p, cutoff), _groups(group, p.size))
    keep, excluded = _split_by_size(sizes, min_group_size)
    rates = {g: all_rates[g] for g in keep}
    reference = max(rates, key=rates.get) if rates else None
    ref_rate = rates.get(reference, 0.0)
    ratios = {g: r / ref_rate if ref_rate > 0 else 1.0 for g, r in rates.items()}
    min_group = min(ratios, key=ratios.get) if len(ratios) >= 2 else None
    return {
        "rates": rates,
        "reference_group": reference,
        "ratios": ratios,
        "min_ratio": ratios[min_group] if min_group is not None else 1.0,
        "min_group": min_group,
        "excluded_small_groups": excluded,
        "small_group_rates": {g: all_rates[g] for g in excluded},
        "group_sizes": sizes,
        "measurable": len(keep) >= 2,
    }


def true_positive_rate_difference(y_true, prob, cutoff, group, min_group_size: int = 30) -> dict:
    """Equal-opportunity gap: max - min over groups of the approval rate among goods (y == 0).

    A group qualifies when it has at least ``min_group_size`` good applicants; the difference is
    0.0 when fewer than two groups qualify.
    """
    p = _prob(prob)
    y = _labels(y_true, p.size)
    g = _groups(group, p.size)
    good = y == 0
    if not good.any():
        raise ValueError("equal opportunity needs good applicants (y_true == 0); there are none")
    rates, sizes = _group_rates(approved_at(p[good], cutoff), g[good])
    keep, excluded = _split_by_size(sizes, min_group_size)
    rates = {name: rates[name] for name in keep}
    difference = max(rates.values()) - min(rates.values()) if len(rates) >= 2 else 0.0
    return {"rates": rates, "difference": float(difference), "excluded_small_groups": excluded}


def confusion_at_cutoff(y_true, prob, cutoff) -> dict:
    """Decision quality at a cutoff, with "declined" as the positive prediction of default."""
    p = _prob(prob)
    y = _labels(y_true, p.size)
    _both_classes(y, "confusion_at_cutoff")
    declined, bad = ~approved_at(p, cutoff), y == 1
    n_declined, n_bad = int(declined.sum()), int(bad.sum())
    declined_bad = int((declined & bad).sum())
    n_approved = p.size - n_declined
    return {
        "precision": declined_bad / n_declined if n_declined else 0.0,
        "recall": declined_bad / n_bad,
        "approval_rate": n_approved / p.size,
        "bad_rate_among_approved": (n_bad - declined_bad) / n_approved if n_approved else 0.0,
        "declined_good_rate": (n_declined - declined_bad) / (p.size - n_bad),
    }


def business_impact(y_true, prob, cutoff, exposure=None, loss_given_default: float = 0.6) -> dict:
    """Approval volume and expected vs realised loss per approved application.

    Losses are exposure * loss_given_default weighted by prob (expected) or by y (realised),
    averaged over approved applications (0.0 if none approved); exposure defaults to 1 each.
    """
    p = _prob(prob)
    y = _labels(y_true, p.size)
    if not 0.0 <= loss_given_default <= 1.0:
        raise ValueError(f"loss_given_default must lie in [0, 1], got {loss_given_default}")
    e = np.ones_like(p) if exposure is None else np.asarray(exposure, dtype=float)
    if e.shape != p.shape:
        raise ValueError(f"exposure has shape {e.shape} but prob has {p.size} values")
    if not np.isfinite(e).all() or (e < 0).any():
        raise ValueError("exposure must be finite and non-negative")
    approved = approved_at(p, cutoff)
    n_approved = int(approved.sum())

    def per_approved(values: np.ndarray) -> float:
        if not n_approved:
            return 0.0
        return float(values[approved].sum() * loss_given_default / n_approved)

    return {
        "approval_rate": n_approved / p.size,
        "bad_rate_among_approved": float(y[approved].mean()) if n_approved else 0.0,
        "expected_loss_among_approved": per_approved(p * e),
        "realised_loss_among_approved": per_approved(y * e),
        "approved_count": n_approved,
        "declined_count": p.size - n_approved,
    }


def choose_cutoff(
    y_true,
    prob,
    max_bad_rate: float | None = None,
    target_approval_rate: float | None = None,
) -> float:
    """Cutoff meeting exactly one policy: a target approval rate or a maximum bad rate.

    ``target_approval_rate``: the prob quantile at that level (1.0 returns a cutoff just above the
    highest prob, approving everyone). ``max_bad_rate``: the highest candidate cutoff (each
    distinct prob, or just above the highest) whose bad rate among approved is <= the limit;
    approving nobody counts as bad rate 0, so the lowest prob is returned if nothing else meets it.
    """
    if (max_bad_rate is None) == (target_approval_rate is None):
        raise ValueError("give exactly one of max_bad_rate and target_approval_rate")
    p = _prob(prob)
    y = _labels(y_true, p.size)
    limit = target_approval_rate if max_bad_rate is None else max_bad_rate
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"the policy rate must lie in [0, 1], got {limit}")
    above_all = np.nextafter(p.max(), np.inf)
    if target_approval_rate is not None:
        return float(above_all if limit == 1.0 else np.quantile(p, limit))
    order = np.argsort(p, kind="stable")
    sorted_p, sorted_y = p[order], y[order]
    first = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    cutoffs = np.r_[sorted_p[first], above_all]
    n_approved = np.r_[first, p.size]
    bads_approved = np.r_[0, np.cumsum(sorted_y)][n_approved]
    bad_rate = np.divide(
        bads_approved, n_approved, out=np.zeros(cutoffs.size), where=n_approved > 0
    )
    return float(cutoffs[np.flatnonzero(bad_rate <= max_bad_rate)[-1]])


def score_report(
    y_true,
    prob,
    cutoff,
    groups: dict | None = None,
    exposure=None,
    min_group_size: int = 30,
    loss_given_default: float = 0.6,
) -> dict:
    """All evaluation metrics at one cutoff, with fairness per protected attribute in ``groups``."""
    p = _prob(prob)
    y = _labels(y_true, p.size)
    _both_classes(y, "score_report")
    auc = float(roc_auc_score(y, p))
    fairness = {
        name: {
            "adverse_impact": adverse_impact_ratio(p, cutoff, g, min_group_size),
            "tpr_difference": true_positive_rate_difference(y, p, cutoff, g, min_group_size),
        }
        for name, g in (groups or {}).items()
    }
    return {
        "n": int(p.size),
        "bad_rate": float(y.mean()),
        "cutoff": float(cutoff),
        "roc_auc": auc,
        "gini": gini(auc),
        "ks": ks_statistic(y, p),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "brier_skill": brier_skill_score(y, p),
        "ece": expected_calibration_error(y, p),
        **confusion_at_cutoff(y, p, cutoff),
        **business_impact(y, p, cutoff, exposure, loss_given_default),
        "fairness": fairness,
    }
