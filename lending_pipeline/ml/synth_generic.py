"""Spec-driven random data: valid landing files for any spec, to onboard a new shape quickly.

Values respect each column's declared dtype, bounds, allowed values and nullability; every
source shares the entity key; the entity source is dated on the partition day, the others a few
days before (a source dated by its partition carries no date column; a static source is one
file, keyed by the values its join column allows). Columns are written under their file names
(`rename`, `prefix` undone). The label follows a simple hidden logistic model of the numeric
columns of the feature sources, so a model can learn something; it is not a credit model.
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
        elif column.dtype == "date":
            data[name] = np.full(n, (day - dt.timedelta(days=30)).isoformat(), dtype=object)
        else:
            data[name] = _column(rng, column, n, name)
    return pd.DataFrame(data)


def _label(
    rng: np.random.Generator, frames: list[tuple[SourceSpec, pd.DataFrame]], n: int, seed: int
) -> np.ndarray:
    """0/1 from a hidden logistic model of the numeric columns (about 25% ones)."""
    weights = np.random.default_rng(seed + 1)
    logit = np.zeros(n)
    for source, frame in frames:
        for name, column in source.columns.items():
            if column.dtype not in ("int", "float") or column.allowed or name in source.key:
                continue
            values = pd.to_numeric(frame[name], errors="coerce").astype(float)
            spread = values.std() or 1.0
            z = ((values - values.mean()) / spread).fillna(0).to_numpy()
            logit += weights.choice([-1.0, 1.0]) * weights.uniform(0.4, 1.0) * z
    noise = rng.logistic(0, 1, n)
    return (logit - 1.3 + noise > 0).astype(np.int64)


def _file_names(source: SourceSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the source's files carry it: no partition-filled date, file column names."""
    if not source.file_dated and source.date_column in frame:
        frame = frame.drop(columns=source.date_column)
    renamed = {spec_name: file_name for file_name, spec_name in source.rename.items()}
    names = {}
    for column in frame.columns:
        if column in renamed:
            names[column] = renamed[column]
        elif source.prefix and column.startswith(source.prefix) and column not in source.key:
            names[column] = column.removeprefix(source.prefix)
    return frame.rename(columns=names)


def _static_rows(rng: np.random.Generator, spec: PipelineSpec, source: SourceSpec) -> pd.DataFrame:
    join = source.key[0]
    allowed = spec.primary_source.columns[join].allowed or []
    keys = np.array([str(v) for v in allowed], dtype=object)
    frame = pd.DataFrame({join: keys})
    for name, column in source.columns.items():
        if name != join:
            frame[name] = _column(rng, column, len(keys), name)
    return frame


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
    for source in spec.sources:
        if source.static:
            frame = _file_names(source, _static_rows(rng, spec, source))
            write_table(frame, data_dir / source.files, source.format)
            files += 1
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        keys = np.char.add(f"K{day:%Y%m%d}-", np.arange(per_day).astype(str)).astype(object)
        made = []
        for source in spec.sources:
            if source.static or source.name == spec.target.source:
                continue
            frame = _source_rows(rng, spec, source, keys, day)
            made.append((source, frame))
            write_table(
                _file_names(source, frame),
                partition_path(data_dir, source, day.isoformat()),
                source.format,
            )
            files += 1
        target = spec.source_by_name[spec.target.source]
        if day + dt.timedelta(days=spec.target.maturity_days) <= as_of:
            frame = _source_rows(rng, spec, target, keys, day)
            frame[spec.target.column] = _label(rng, made, per_day, seed)
            path = partition_path(data_dir, target, day.isoformat())
            write_table(_file_names(target, frame), path, target.format)
            files += 1
    return files
