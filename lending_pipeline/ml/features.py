"""Applicant features: point-in-time join of the sources, then the spec's derived features.

For each application, every other feature source contributes its latest row dated on or before
the application date; rows dated later (a bureau re-pull after the decision, a late income
verification) are ignored, so no information from after the application reaches the features.
The same function serves training and scoring, so both compute features identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lending_pipeline.ml.expressions import evaluate_array
from lending_pipeline.spec import PipelineSpec


@dataclass
class FeatureResult:
    features: pd.DataFrame
    excluded_after_application: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)


@dataclass
class FreshnessResult:
    rows: int
    stale: int
    missing: int
    max_days: float
    max_share: float
    stale_keys: list[str]

    @property
    def stale_share(self) -> float:
        return self.stale / self.rows if self.rows else 0.0

    @property
    def passed(self) -> bool:
        return self.stale_share <= self.max_share


def output_columns(spec: PipelineSpec) -> list[str]:
    """Columns of the features table: key, date, model inputs, protected attributes, dates."""
    primary = spec.primary_source
    columns = [spec.entity.key, primary.date_column]
    columns += [
        s.date_column for s in spec.feature_sources if s.name != primary.name and s.date_column
    ]
    columns += spec.features.model_inputs + spec.protected_attributes
    if spec.features.freshness:
        columns.append(spec.features.freshness.column)
    return list(dict.fromkeys(columns))


def build_features(
    spec: PipelineSpec, tables: dict[str, pd.DataFrame], extra_columns: Sequence[str] = ()
) -> FeatureResult:
    """Join the validated feature sources point-in-time and compute the derived features.

    `extra_columns` keeps further joined or derived columns (e.g. the source columns drift
    monitoring watches) after the spec's output columns.
    """
    result = FeatureResult(features=pd.DataFrame())
    joined = join_sources(spec, tables, result)
    frame = derive(spec, dict(joined.items()), len(joined))
    columns = list(dict.fromkeys([*output_columns(spec), *extra_columns]))
    result.features = pd.DataFrame({c: frame[c] for c in columns}, index=joined.index)
    return result


def join_sources(
    spec: PipelineSpec,
    tables: dict[str, pd.DataFrame],
    result: FeatureResult | None = None,
    include_pii: bool = False,
) -> pd.DataFrame:
    """One row per application: each other feature source's latest row on or before its date.

    Counts of rows dated after the application and of applications without a row go to
    `result` when given. PII columns are left out unless `include_pii`.
    """
    key = spec.entity.key
    primary = spec.primary_source

    def wanted(source) -> list[str]:
        return [c for c in source.columns if include_pii or not source.columns[c].pii]

    joined = tables[primary.name][wanted(primary)].reset_index(drop=True)
    anchor = joined[[key, primary.date_column]]
    for source in spec.feature_sources:
        if source.name == primary.name:
            continue
        if source.static:  # reference data: joined by its key, no date
            table = tables[source.name][wanted(source)]
            joined = joined.merge(
                table, on=source.key, how="left", validate="many_to_one", indicator="_matched"
            )
            if result is not None:
                result.unmatched[source.name] = int((joined["_matched"] == "left_only").sum())
            joined = joined.drop(columns="_matched")
            continue
        latest, excluded = point_in_time_latest(
            tables[source.name][wanted(source)],
            anchor,
            key,
            source.date_column,
            primary.date_column,
        )
        if result is not None:
            result.excluded_after_application[source.name] = excluded
            result.unmatched[source.name] = len(joined) - _count_in(joined[key], latest[key])
        joined = joined.merge(latest, on=key, how="left", validate="one_to_one")
    return joined


def derive(spec: PipelineSpec, columns: dict, rows: int) -> dict:
    """Add the spec's derived features, in order (a feature may use those before it).

    Used on whole joined tables in training and on the applications of a scoring request.
    """
    out = dict(columns)
    for feature in spec.features.derived:
        out[feature.name] = evaluate_array(feature.expression, out, rows)
    return out


def _count_in(values: pd.Series, pool: pd.Series) -> int:
    """How many of `values` occur in `pool` (in Arrow: fast for text keys)."""
    found = pc.is_in(pa.array(values, from_pandas=True), value_set=pa.array(pool, from_pandas=True))
    return int(pc.sum(found).as_py() or 0)


def point_in_time_latest(
    rows: pd.DataFrame, anchor: pd.DataFrame, key: str, date_column: str, anchor_date: str
) -> tuple[pd.DataFrame, int]:
    """Per key, the latest row dated on or before the anchor date; and how many were later."""
    with_anchor = rows.merge(anchor, on=key, how="inner", suffixes=("", "__anchor"))
    anchor_col = anchor_date if anchor_date != date_column else f"{anchor_date}__anchor"
    usable = with_anchor[date_column] <= with_anchor[anchor_col]
    excluded = int((~usable & with_anchor[date_column].notna()).sum())
    kept = with_anchor[usable].sort_values([key, date_column], kind="stable")
    latest = kept.drop_duplicates(key, keep="last")
    return latest[rows.columns].reset_index(drop=True), excluded


def point_in_time_violations(spec: PipelineSpec, features: pd.DataFrame) -> dict[str, int]:
    """Rows whose joined source date is after the application date (must be zero)."""
    primary_date = spec.primary_source.date_column
    return {
        s.date_column: int((features[s.date_column] > features[primary_date]).sum())
        for s in spec.feature_sources
        if s.name != spec.entity.source and s.date_column and s.date_column in features
    }


def freshness(spec: PipelineSpec, features: pd.DataFrame) -> FreshnessResult | None:
    """Share of rows whose freshness column (e.g. bureau data age) exceeds the spec's limit."""
    rule = spec.features.freshness
    if rule is None:
        return None
    age = features[rule.column]
    stale = (age > rule.max_days).to_numpy()
    return FreshnessResult(
        rows=len(features),
        stale=int(stale.sum()),
        missing=int(age.isna().sum()),
        max_days=rule.max_days,
        max_share=rule.max_stale_share,
        stale_keys=features.loc[stale, spec.entity.key].head(5).astype(str).tolist(),
    )


def model_matrix(spec: PipelineSpec, features: pd.DataFrame) -> pd.DataFrame:
    """The model inputs only, numeric as float64 and categorical as text."""
    out = {}
    derived = {f.name for f in spec.features.derived}
    for name in spec.features.model_inputs:
        column = features[name]
        if name not in derived and spec.column(name).dtype in ("category", "bool"):
            out[name] = column.astype(object).where(column.notna(), None)
        else:
            out[name] = pd.to_numeric(column, errors="coerce").astype(np.float64)
    return pd.DataFrame(out, index=features.index)
