"""Drift of the current applicant population against a reference: PSI tiers, tests, missing fields.

PSI (population stability index) uses the banking convention: numeric features are cut at the
reference's quantiles (deciles by default) with one more bin for missing values; a categorical
feature has one bin per reference category plus one "other/missing" bin. Empty bins count as
`EPSILON` so the logarithm stays finite. PSI = sum((current - reference) * ln(current /
reference)) over the bins' shares.

Each feature also gets a two-sample test (Kolmogorov-Smirnov for numeric, chi-square for
categorical) and its missing rate in both frames; a rise in the missing rate of at least
`missing_spike` is a spike. Tiers come from the spec's `drift` section: PSI at or above
`psi_warn` is `warn`, at or above `psi_retrain` is `retrain`; a missing-field spike is at least
`warn`. With fewer than `min_rows` rows on either side nothing is judged (`not_judged`).

Only aggregates leave this module (PSI, statistics, rates, counts): never a row's values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from lending_pipeline.ml.expressions import referenced_columns
from lending_pipeline.spec import DriftSpec, PipelineSpec

EPSILON = 1e-4
MAX_CATEGORIES = 50
TIERS = ("ok", "warn", "retrain")
NOT_JUDGED = "not_judged"
STATUS_COLORS = {"ok": "#4c9a5a", "warn": "#e0a526", "retrain": "#c8413b", NOT_JUDGED: "#999999"}


def monitored_columns(spec: PipelineSpec) -> tuple[list[str], list[str]]:
    """The columns drift watches, and which of them are categorical.

    The model inputs, then every column a derived input is computed from (transitively): a
    ratio such as loan-to-income dilutes a shift in income with the spread of the loan amount,
    so income itself is watched too. Keys, dates, text, PII and protected attributes are not.
    """
    derived = {f.name: f.expression for f in spec.features.derived}
    excluded = {spec.entity.key, *spec.protected_attributes}
    columns = list(spec.features.model_inputs)
    for name in columns:  # grows while iterating: a breadth-first walk of the lineage
        if name not in derived:
            continue
        for column in sorted(referenced_columns(derived[name])):
            watchable = column in derived or spec.column(column).dtype not in ("date", "string")
            if watchable and column not in excluded and column not in columns:
                columns.append(column)
    categorical = [
        c for c in columns if c not in derived and spec.column(c).dtype in ("category", "bool")
    ]
    return columns, categorical


def psi_from_counts(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two count (or share) vectors over the same bins; empty bins count as EPSILON."""
    ref = np.maximum(reference / max(reference.sum(), 1), EPSILON)
    cur = np.maximum(current / max(current.sum(), 1), EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def quantile_edges(reference_sorted: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, ties merged (discrete values, spikes)."""
    if reference_sorted.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(reference_sorted, np.linspace(0, 1, bins + 1)[1:-1]))


def _bin_counts(values_sorted: np.ndarray, edges: np.ndarray, missing: int) -> np.ndarray:
    """Counts in (-inf, e1), [e1, e2), ..., [ek, inf) and the missing bin, from sorted values."""
    cuts = np.searchsorted(values_sorted, edges, side="left")
    bounds = np.concatenate([[0], cuts, [values_sorted.size]])
    return np.append(np.diff(bounds), missing)


def _as_float(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


def _sorted_present(values: np.ndarray) -> np.ndarray:
    return np.sort(values[~np.isnan(values)])


def numeric_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of a numeric feature with reference-quantile bins and a missing bin (NaN = missing)."""
    ref, cur = _sorted_present(reference), _sorted_present(current)
    return _numeric_psi_sorted(ref, cur, reference.size - ref.size, current.size - cur.size, bins)


def _numeric_psi_sorted(ref, cur, ref_missing: int, cur_missing: int, bins: int) -> float:
    edges = quantile_edges(ref, bins)
    return psi_from_counts(
        _bin_counts(ref, edges, ref_missing), _bin_counts(cur, edges, cur_missing)
    )


def ks_test(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value, on sorted values.

    The p-value uses the limiting Kolmogorov distribution: exact enough from a few hundred rows
    a side, and constant-time at a million (SciPy's finite-n `kstwo` takes about a second).
    """
    n, m = reference_sorted.size, current_sorted.size
    if n == 0 or m == 0:
        return math.nan, math.nan
    ref_at_cur = np.searchsorted(reference_sorted, current_sorted, side="right") / n
    cur_at_ref = np.searchsorted(current_sorted, reference_sorted, side="right") / m
    ref_at_ref = np.searchsorted(reference_sorted, reference_sorted, side="right") / n
    cur_at_cur = np.searchsorted(current_sorted, current_sorted, side="right") / m
    statistic = max(np.abs(ref_at_cur - cur_at_cur).max(), np.abs(ref_at_ref - cur_at_ref).max())
    p_value = stats.kstwobign.sf(statistic * math.sqrt(n * m / (n + m)))
    return float(statistic), float(p_value)


def category_counts(
    reference: pd.Series, current: pd.Series, max_categories: int = MAX_CATEGORIES
) -> tuple[np.ndarray, np.ndarray]:
    """Counts per reference category (the most frequent `max_categories`) + other/missing."""
    categories = reference.value_counts(dropna=True).index[:max_categories]

    def counts(column: pd.Series) -> np.ndarray:
        codes = pd.Categorical(column, categories=categories).codes
        return np.bincount(
            np.where(codes < 0, len(categories), codes), minlength=len(categories) + 1
        )

    return counts(reference), counts(current)


def chi_square_test(
    reference_counts: np.ndarray, current_counts: np.ndarray
) -> tuple[float, float]:
    """Chi-square test of homogeneity on the 2 x bins table (bins empty on both sides dropped)."""
    table = np.vstack([reference_counts, current_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def tier(psi: float, settings: DriftSpec) -> str:
    """ok / warn / retrain for one PSI value (thresholds are inclusive)."""
    if psi >= settings.psi_retrain:
        return "retrain"
    return "warn" if psi >= settings.psi_warn else "ok"


def _numeric_row(reference: pd.Series, current: pd.Series, bins: int) -> dict:
    ref_all, cur_all = _as_float(reference), _as_float(current)
    ref, cur = _sorted_present(ref_all), _sorted_present(cur_all)
    statistic, p_value = ks_test(ref, cur)
    psi = _numeric_psi_sorted(ref, cur, ref_all.size - ref.size, cur_all.size - cur.size, bins)
    return {"kind": "numeric", "psi": psi, "test": "ks", "statistic": statistic, "p_value": p_value}


def _categorical_row(reference: pd.Series, current: pd.Series) -> dict:
    ref_counts, cur_counts = category_counts(reference, current)
    statistic, p_value = chi_square_test(ref_counts, cur_counts)
    psi = psi_from_counts(ref_counts, cur_counts)
    return {
        "kind": "categorical",
        "psi": psi,
        "test": "chi2",
        "statistic": statistic,
        "p_value": p_value,
    }


def is_categorical(column: pd.Series) -> bool:
    """Text, category and bool columns are categorical; numbers are numeric."""
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def feature_drift(
    reference: pd.Series, current: pd.Series, settings: DriftSpec, categorical: bool
) -> dict:
    """PSI, test, missing rates and status of one feature."""
    row = (
        _categorical_row(reference, current)
        if categorical
        else _numeric_row(reference, current, settings.bins)
    )
    missing_ref = float(reference.isna().mean()) if len(reference) else 0.0
    missing_cur = float(current.isna().mean()) if len(current) else 0.0
    spike = missing_cur - missing_ref >= settings.missing_spike
    status = tier(row["psi"], settings)
    if spike and status == "ok":
        status = "warn"
    return {
        **row,
        "status": status,
        "missing_reference": missing_ref,
        "missing_current": missing_cur,
        "missing_spike": spike,
    }


@dataclass(frozen=True)
class ScoreDrift:
    """Drift of the predicted probability of default."""

    psi: float
    status: str
    ks_statistic: float
    p_value: float
    mean_reference: float
    mean_current: float

    def summary(self) -> dict:
        return {name: _plain(value) for name, value in self.__dict__.items()}


def score_drift(reference: np.ndarray, current: np.ndarray, settings: DriftSpec) -> ScoreDrift:
    """PSI (reference-quantile bins) and KS of two arrays of predicted probabilities."""
    ref_all = np.asarray(reference, dtype=np.float64)
    cur_all = np.asarray(current, dtype=np.float64)
    ref, cur = _sorted_present(ref_all), _sorted_present(cur_all)
    psi = _numeric_psi_sorted(
        ref, cur, ref_all.size - ref.size, cur_all.size - cur.size, settings.bins
    )
    statistic, p_value = ks_test(ref, cur)
    return ScoreDrift(
        psi=psi,
        status=tier(psi, settings),
        ks_statistic=statistic,
        p_value=p_value,
        mean_reference=float(ref.mean()) if ref.size else math.nan,
        mean_current=float(cur.mean()) if cur.size else math.nan,
    )


@dataclass(frozen=True)
class DriftResult:
    """Per-feature drift table (index: feature) and the overall judgement."""

    table: pd.DataFrame
    rows_reference: int
    rows_current: int
    settings: DriftSpec
    score: ScoreDrift | None = None

    @property
    def judged(self) -> bool:
        """Whether both frames have at least `min_rows` rows."""
        return min(self.rows_reference, self.rows_current) >= self.settings.min_rows

    @property
    def worst_tier(self) -> str:
        """retrain, warn or ok over features and score; not_judged below `min_rows`."""
        if not self.judged:
            return NOT_JUDGED
        statuses = list(self.table["status"])
        if self.score is not None:
            statuses.append(self.score.status)
        return max(statuses, key=TIERS.index, default="ok")

    @property
    def drifted(self) -> dict[str, float]:
        """Features at warn or retrain, with their PSI, worst first."""
        flagged = self.table[self.table["status"].isin(TIERS[1:])]
        return {
            name: float(psi) for name, psi in flagged["psi"].sort_values(ascending=False).items()
        }

    @property
    def missing_spikes(self) -> list[str]:
        return list(self.table.index[self.table["missing_spike"]]) if self.judged else []

    def summary(self) -> dict:
        """JSON-serialisable aggregates (no row values)."""
        s = self.settings
        features = self.table.reset_index(names="feature").to_dict("records")
        return {
            "judged": self.judged,
            "worst_tier": self.worst_tier,
            "rows": {"reference": self.rows_reference, "current": self.rows_current},
            "thresholds": {
                "psi_warn": s.psi_warn,
                "psi_retrain": s.psi_retrain,
                "bins": s.bins,
                "missing_spike": s.missing_spike,
                "min_rows": s.min_rows,
            },
            "drifted": self.drifted,
            "missing_spikes": self.missing_spikes,
            "score": self.score.summary() if self.score else None,
            "features": [{k: _plain(v) for k, v in row.items()} for row in features],
        }


def _plain(value):
    """A JSON-safe Python scalar (NaN becomes None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def check_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    settings: DriftSpec | None = None,
    columns: list[str] | None = None,
    categorical: list[str] | None = None,
    current_scores: np.ndarray | None = None,
    reference_scores: np.ndarray | None = None,
) -> DriftResult:
    """Drift of every feature in `columns` (default: columns common to both frames).

    `categorical` names the categorical features (default: text, category and bool columns).
    Pass both score arrays to include score (prediction) drift.
    """
    settings = settings or DriftSpec()
    columns = columns or [c for c in reference.columns if c in current.columns]
    if categorical is None:
        categorical = [c for c in columns if is_categorical(reference[c])]
    rows = {
        name: feature_drift(reference[name], current[name], settings, name in categorical)
        for name in columns
    }
    score = None
    if current_scores is not None and reference_scores is not None:
        score = score_drift(reference_scores, current_scores, settings)
    result = DriftResult(
        table=pd.DataFrame.from_dict(rows, orient="index"),
        rows_reference=len(reference),
        rows_current=len(current),
        settings=settings,
        score=score,
    )
    if not result.judged:
        result.table["status"] = NOT_JUDGED
        if score is not None:
            result = replace(result, score=replace(score, status=NOT_JUDGED))
    return result


def plot_psi(result: DriftResult, path: str | Path) -> Path:
    """Bar chart of PSI per feature (worst first) with the warn and retrain lines, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = result.table.sort_values("psi")
    figure = Figure(figsize=(8, 0.3 * len(table) + 1.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh(table.index, table["psi"], color=[STATUS_COLORS[s] for s in table["status"]])
    for value, label in (
        (result.settings.psi_warn, "warn"),
        (result.settings.psi_retrain, "retrain"),
    ):
        axes.axvline(value, color=STATUS_COLORS[label], linestyle="--", label=f"{label} {value:g}")
    axes.set_xlabel("PSI (reference-quantile bins)")
    axes.set_title(f"Feature drift: {result.worst_tier} ({result.rows_current:,} current rows)")
    axes.legend(loc="lower right")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def sample_rows(frame: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """At most `rows` rows drawn without replacement (all of them when fewer)."""
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=seed)


def write_evidently_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    path: str | Path,
    columns: list[str] | None = None,
    categorical: list[str] | None = None,
    sample_size: int = DriftSpec().report_sample_rows,
    seed: int = 0,
) -> Path:
    """Evidently `DataDriftPreset` HTML report on at most `sample_size` rows of each frame.

    Evidently's own tests and PSI (equal-width bins) complement, not replace, `check_drift`:
    the tiers come from `check_drift`. Sampling keeps the report at about a second per 20k rows.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = columns or [c for c in reference.columns if c in current.columns]
    if categorical is None:
        categorical = [c for c in columns if is_categorical(reference[c])]
    categorical = [c for c in columns if c in categorical]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in categorical],
        categorical_columns=categorical,
    )

    def dataset(frame: pd.DataFrame) -> Dataset:
        plain = sample_rows(frame[columns], sample_size, seed)
        text = {c: plain[c].astype(object).where(plain[c].notna(), None) for c in categorical}
        return Dataset.from_pandas(plain.assign(**text), data_definition=definition)

    snapshot = Report([DataDriftPreset(columns=columns)]).run(
        current_data=dataset(current), reference_data=dataset(reference)
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path
