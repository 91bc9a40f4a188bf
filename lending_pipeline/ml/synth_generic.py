"""Spec-driven random data: valid landing files for any spec, to onboard a new shape quickly.

Values respect each column's declared dtype, bounds, allowed values and nullability; every
source shares the entity key; the entity source is dated on the partition day, the others a few
days before. There is no risk model behind the label: use it to exercise the pipeline, not to
judge a model.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from lending_pipeline.ml.synth import partition_path, write_table
from lending_pipeline.spec import ColumnSpec, PipelineSpec, SourceSpec


def _column(rng: np.random.Generator, spec: ColumnSpec, n: int, name: str) -> np.ndarray | list:
    if spec.allowed is not None:
        values = rng.choice(np.array(spec.allowed, dtype=object), n)
    elif spec.dtype in ("int", "float"):
        low = 0.0 if spec.min is None else spec.min
        high = low + 1000.0 if spec.max is None else spec.max
        values = rng.uniform(low, high, n)
        values = np.floor(values).astype(np.int64) if spec.dtype == "int" else values.round(2)
    elif spec.dtype == "bool":
        values = rng.random(n) < 0.5
    elif spec.dtype == "date":
        values = np.full(n, "1970-01-01", dtype=object)
    else:
        values = np.char.add(f"{name}_", rng.integers(0, 10**9, n).astype(str)).astype(object)
    if spec.nullable:
        values = np.where(rng.random(n) < 0.02, None, values.astype(object))
    return values


def _source_rows(
    rng: np.random.Generator, spec: PipelineSpec, source: SourceSpec, keys: np.ndarray, day: dt.date
) -> pd.DataFrame:
    n = len(keys)
    data = {}
    for name, column in source.columns.items():
        if name == spec.entity.key:
            data[name] = keys
        elif name == source.date_column:
            lag = 0 if source.name == spec.entity.source else rng.integers(0, 6, n)
            if source.name == spec.target.source:
                lag = -spec.target.maturity_days
            dates = np.datetime64(day, "D") - np.asarray(lag).astype("timedelta64[D]")
            data[name] = np.broadcast_to(dates, (n,)).astype(str)
        else:
            data[name] = _column(rng, column, n, name)
    return pd.DataFrame(data)


def generate_from_spec(
    spec: PipelineSpec,
    data_dir: Path,
    start: dt.date,
    days: int,
    per_day: int,
    seed: int = 7,
    as_of: dt.date | None = None,
) -> int:
    """Write valid random landing files for every source of `spec`; returns files written."""
    rng = np.random.default_rng(seed)
    as_of = as_of or start + dt.timedelta(days=days)
    files = 0
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        keys = np.char.add(f"K{day:%Y%m%d}-", np.arange(per_day).astype(str)).astype(object)
        for source in spec.sources:
            matured = day + dt.timedelta(days=spec.target.maturity_days) <= as_of
            if source.name == spec.target.source and not matured:
                continue
            frame = _source_rows(rng, spec, source, keys, day)
            write_table(frame, partition_path(data_dir, source, day.isoformat()), source.format)
            files += 1
    return files
