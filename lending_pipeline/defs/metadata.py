"""Check metadata a person can act on: runbook links, typed tables, masked samples, links to
MLflow runs."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from lending_pipeline.links import mlflow_run_link, runbook_entry, runbook_link
from lending_pipeline.ml.ingest import SOURCE_FILE, SOURCE_ROW
from lending_pipeline.ml.validation import COLUMN, DETAIL, RULE
from lending_pipeline.spec import SourceSpec

MASK = "•••"


def runbook_url(anchor: str) -> dg.MetadataValue:
    """http(s) link to the check's entry in docs/runbook.md (see `lending_pipeline.links`)."""
    return dg.MetadataValue.url(runbook_link(anchor))


def runbook_metadata(anchor: str, passed: bool = False) -> dict[str, dg.MetadataValue]:
    """The runbook link and, unless the check `passed`, the entry's own "what happened / what
    to do" text."""
    metadata = {"runbook": runbook_url(anchor)}
    text = None if passed else runbook_entry(anchor)
    if text:
        metadata["runbook_entry"] = dg.MetadataValue.md(text)
    return metadata


DIGITS = 4


def rounded(value: float | None, digits: int = DIGITS) -> float | None:
    """A float for metadata: rounded, NaN as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def _cell(value, kind: str):
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "float":
        return rounded(value)
    if kind in ("int", "bool"):
        return value
    return str(value)


def frame_table(frame: pd.DataFrame) -> dg.MetadataValue:
    """A small frame as a typed table (column types from the dtypes, floats rounded)."""
    kinds = {str(c): _column_type(frame[c]) for c in frame.columns}
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in kinds.items()])
    records = [
        dg.TableRecord({name: _cell(v, kinds[name]) for name, v in zip(kinds, row, strict=True)})
        for row in frame.itertuples(index=False)
    ]
    return dg.MetadataValue.table(records, schema=schema)


def mlflow_run_metadata(tracking_uri: str, run_id: str) -> dict[str, dg.MetadataValue]:
    """The MLflow run id and a link to its page in the MLflow UI."""
    from mlflow import MlflowClient

    experiment = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    return {
        "mlflow_run_id": dg.MetadataValue.text(run_id),
        "mlflow_run": dg.MetadataValue.url(mlflow_run_link(experiment, run_id, tracking_uri)),
    }


def image_markdown(images: dict[str, Path]) -> dg.MetadataValue:
    """PNGs embedded in one markdown value (data URIs: they show wherever the UI runs)."""
    parts = []
    for title, path in images.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"![{title}](data:image/png;base64,{data})\n\n`{path}`")
    return dg.MetadataValue.md("\n\n".join(parts))


def metric_key(*parts: str) -> str:
    """A metadata key for a plottable number, e.g. `approval_rate.age_band.18-25`."""
    return ".".join(re.sub(r"[^\w\-]+", "_", str(p)) for p in parts)


def markdown_table(frame: pd.DataFrame) -> dg.MetadataValue:
    if frame.empty:
        return dg.MetadataValue.md("_none_")
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = [
        "| " + " | ".join(str(v).replace("|", "/") for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return dg.MetadataValue.md("\n".join([header, rule, *rows]))


def masked_quarantine_sample(quarantine: pd.DataFrame, source: SourceSpec, n: int = 5):
    """A few quarantined rows: key, origin, rule and the offending value (PII masked)."""
    rows = []
    visible_key = [k for k in source.key if not source.columns[k].pii]
    for record in quarantine.head(n).to_dict("records"):
        column = str(record.get(COLUMN) or "").split(";")[0]
        if column in source.columns and not source.columns[column].pii:
            value = record.get(column)
        else:
            value = MASK
        rows.append(
            [
                *(record.get(k) for k in visible_key),
                record.get(SOURCE_FILE),
                record.get(SOURCE_ROW),
                record.get(RULE),
                column,
                "(empty)" if _is_empty(value) else value,
                record.get(DETAIL),
            ]
        )
    columns = [*visible_key, "file", "row", "rule", "column", "value", "detail"]
    return text_table(columns, rows)


def text_table(columns: list[str], rows: list[list]) -> dg.MetadataValue:
    """A typed table whose cells are all text (missing values stay empty)."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, "string") for name in columns])
    records = [
        dg.TableRecord({name: _cell(v, "string") for name, v in zip(columns, row, strict=True)})
        for row in rows
    ]
    return dg.MetadataValue.table(records, schema=schema)


def counts_table(counts: dict[str, int], label: str = "rule") -> dg.MetadataValue:
    """Row counts by `label`, sorted by it."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(label, "string"), dg.TableColumn("rows", "int")]
    )
    records = [dg.TableRecord({label: str(k), "rows": int(v)}) for k, v in sorted(counts.items())]
    return dg.MetadataValue.table(records, schema=schema)


def _is_empty(value) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))
