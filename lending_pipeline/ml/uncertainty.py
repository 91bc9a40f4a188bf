"""Bootstrap confidence intervals for the gated metrics, vectorised and seeded.

Every resample draws n rows with replacement from the out-of-time split (multinomial row counts),
and every model is scored on the same resamples, so differences (candidate minus baseline or
champion) are paired. Resamples are processed in chunks bounded in memory (`CHUNK_CELLS` row
counts at a time); one resample costs a few passes over the sorted scores, never a refit.

Metrics per resample: ROC-AUC (ties count one half), KS, ECE (bins fixed at the full sample's
quantile edges), Brier skill over the no-skill forecast (the resample's default rate), the lowest
adverse impact ratio and the largest true-positive-rate gap over the protected attributes (groups
that qualify in the full sample, by `min_group_size`). The interval is the percentile interval at
`level`; a resample where a metric is undefined (one class only) is left out of that metric.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CHUNK_CELLS = 2_000_000  # row counts held per chunk: resamples x rows
LOWER_IS_BETTER = {"ece", "max_tpr_difference", "auc_drop_vs_champion"}


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval of one metric."""

    metric: str
    estimate: float
    low: float
    high: float
    level: float
    resamples: int

    @property
    def conservative(self) -> float:
        """The bound a gate should fear: the upper one for lower-is-better metrics."""
        return self.high if self.metric in LOWER_IS_BETTER else self.low

    def describe(self) -> str:
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}] ({self.level:.0%})"

    def as_dict(self) -> dict:
        return asdict(self)


def resample_counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """How often each row is drawn in each resample: shape (resamples, n), each row sums to n."""
    draws = rng.integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=resamples * n).reshape(resamples, n)


class _Sorted:
    """One model's scores in ascending order with the boundaries of tied runs and ECE bins."""

    def __init__(self, y: np.ndarray, prob: np.ndarray, bins: int):
        self.order = np.argsort(prob, kind="stable")
        p = prob[self.order]
        self.p, self.y = p, y[self.order].astype(float)
        starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
        self.ties = None if len(starts) == len(p) else starts  # None: every score distinct
        edges = np.unique(np.quantile(prob, np.linspace(0, 1, bins + 1)[1:-1]))
        codes = np.searchsorted(edges, p, side="left")
        members = (codes[:, None] == np.arange(len(edges) + 1)[None, :]).astype(float)
        # per-bin sums as one matrix product: predicted, observed, rows
        self.by_bin = np.hstack([members * p[:, None], members * self.y[:, None], members])
        self.nbins = members.shape[1]
        self.columns = np.column_stack([self.y, (p - self.y) ** 2])

    def metrics(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        w = counts[:, self.order].astype(float)
        bad = w * self.y
        good = w - bad
        if self.ties is not None:
            bad = np.add.reduceat(bad, self.ties, axis=1)
            good = np.add.reduceat(good, self.ties, axis=1)
        sums = w @ self.columns
        n_bad, total = sums[:, 0], w.sum(axis=1)
        n_good = total - n_bad
        cum_good = np.cumsum(good, axis=1)
        binned = w @ self.by_bin
        k = self.nbins
        with np.errstate(invalid="ignore", divide="ignore"):
            ranked = (bad * (cum_good - 0.5 * good)).sum(axis=1)
            auc = ranked / (n_bad * n_good)
            cum_bad = np.cumsum(bad, axis=1)
            ks = np.abs(cum_bad / n_bad[:, None] - cum_good / n_good[:, None]).max(axis=1)
            ece = np.abs(binned[:, :k] - binned[:, k : 2 * k]).sum(axis=1) / total
            rate = n_bad / total
            skill = 1 - (sums[:, 1] / total) / (rate * (1 - rate))
        both = (n_bad > 0) & (n_good > 0)
        nan = np.full(len(w), np.nan)
        return {
            "roc_auc": np.where(both, auc, nan),
            "ks": np.where(both, ks, nan),
            "ece": ece,
            "brier_skill": np.where(both, skill, nan),
        }


def _group_matrix(group: np.ndarray, keep: list[str]) -> np.ndarray:
    return (group[:, None] == np.asarray(keep, dtype=object)[None, :]).astype(float)


def _fairness(
    counts: np.ndarray,
    approved: np.ndarray,
    good: np.ndarray,
    groups: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Lowest adverse impact ratio and largest TPR gap over attributes, per resample."""
    w = counts.astype(float)
    air = np.full(len(w), np.nan)
    gap = np.full(len(w), np.nan)
    for members, good_members in groups.values():
        if members is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                rates = (w * approved) @ members / (w @ members)
                ratio = rates.min(axis=1) / rates.max(axis=1)
            ratio = np.where(rates.max(axis=1) > 0, ratio, 1.0)
            air = np.fmin(air, ratio)
        if good_members is not None:
            wg = w * good
            with np.errstate(invalid="ignore", divide="ignore"):
                rates = (wg * approved) @ good_members / (wg @ good_members)
            gap = np.fmax(gap, rates.max(axis=1) - rates.min(axis=1))
    return {"min_adverse_impact_ratio": air, "max_tpr_difference": gap}


def _qualifying(values: np.ndarray, min_group_size: int) -> list[str]:
    names, sizes = np.unique(values, return_counts=True)
    return [str(g) for g, s in zip(names, sizes, strict=True) if s >= min_group_size]


def bootstrap_intervals(
    y_true,
    probs: dict[str, np.ndarray],
    approved: np.ndarray,
    groups: dict[str, np.ndarray] | None = None,
    estimates: dict[str, float] | None = None,
    min_group_size: int = 30,
    resamples: int = 200,
    level: float = 0.9,
    seed: int = 0,
    bins: int = 10,
) -> dict[str, Interval]:
    """Percentile intervals of the candidate's gated metrics and of its paired AUC differences.

    `probs` holds "candidate" and optionally "baseline" and "champion" (scored on the same rows);
    `approved` is the candidate's decision per row; `groups` the protected attributes' values
    (None or NaN as "unknown"). `estimates` (the full-sample figures from the score report) are
    shown as the interval's estimate; without them the resamples' median is. Returns intervals
    keyed by metric: roc_auc, ks, ece, brier_skill, min_adverse_impact_ratio, max_tpr_difference
    (when at least two groups qualify), auc_margin_over_baseline, auc_drop_vs_champion and
    auc_gain_over_champion.
    """
    y = np.asarray(y_true).astype(int)
    n = y.size
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if "candidate" not in probs:
        raise ValueError("probs needs the candidate's probabilities")
    for name, p in probs.items():
        if np.shape(p) != (n,):
            raise ValueError(f"probs[{name}] has shape {np.shape(p)} but y_true has {n} rows")
    approved = np.asarray(approved, dtype=bool)
    good = y == 0
    fair: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
    for name, values in (groups or {}).items():
        g = np.asarray(values, dtype=object)
        g = np.where([v is None or v != v for v in g], "unknown", g.astype(str))
        keep, keep_good = _qualifying(g, min_group_size), _qualifying(g[good], min_group_size)
        fair[name] = (
            _group_matrix(g, keep) if len(keep) >= 2 else None,
            _group_matrix(g, keep_good) if len(keep_good) >= 2 else None,
        )
    models = {name: _Sorted(y, np.asarray(p, dtype=float), bins) for name, p in probs.items()}
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // max(n, 1))
    collected: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < resamples:
        counts = resample_counts(rng, n, min(chunk, resamples - done))
        done += len(counts)
        scored = {name: model.metrics(counts) for name, model in models.items()}
        values = dict(scored["candidate"])
        if "baseline" in scored:
            values["auc_margin_over_baseline"] = values["roc_auc"] - scored["baseline"]["roc_auc"]
        if "champion" in scored:
            values["auc_drop_vs_champion"] = scored["champion"]["roc_auc"] - values["roc_auc"]
            values["auc_gain_over_champion"] = -values["auc_drop_vs_champion"]
        if fair:
            values |= _fairness(counts, approved, good, fair)
        for name, array in values.items():
            collected.setdefault(name, []).append(array)
    intervals = {}
    tail = (1 - level) / 2 * 100
    for name, parts in collected.items():
        array = np.concatenate(parts)
        array = array[np.isfinite(array)]
        if array.size == 0:
            continue
        low, high = np.percentile(array, [tail, 100 - tail])
        estimate = (estimates or {}).get(name)
        estimate = float(np.median(array)) if estimate is None else float(estimate)
        intervals[name] = Interval(name, estimate, float(low), float(high), level, int(array.size))
    return intervals
