"""Check metadata a person can act on: runbook links, rule tables, masked samples."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from lending_pipeline.links import runbook_entry, runbook_link
from lending_pipeline.ml.ingest import SOURCE_FILE, SOURCE_ROW
from lending_pipeline.ml.validation import COLUMN, DETAIL, RULE
from lending_pipeline.spec import SourceSpec

MASK = "•••"


def runbook_url(anchor: str) -> dg.MetadataValue:
    """http(s) link to the check's entry in docs/runbook.md (see `lending_pipeline.links`)."""
    return dg.MetadataValue.url(runbook_link(anchor))


def runbook_metadata(anchor: str) -> dict[str, dg.MetadataValue]:
    """The runbook link and the entry's own "what happened / what to do" text."""
    metadata = {"runbook": runbook_url(anchor)}
    text = runbook_entry(anchor)
    if text:
        metadata["runbook_entry"] = dg.MetadataValue.md(text)
    return metadata


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
            {
                **{k: record.get(k) for k in visible_key},
                "file": record.get(SOURCE_FILE),
                "row": record.get(SOURCE_ROW),
                "rule": record.get(RULE),
                "column": column,
                "value": "(empty)" if _is_empty(value) else value,
                "detail": record.get(DETAIL),
            }
        )
    return markdown_table(pd.DataFrame(rows))


def counts_table(counts: dict[str, int], label: str = "rule") -> dg.MetadataValue:
    frame = pd.DataFrame(sorted(counts.items()), columns=[label, "rows"])
    return markdown_table(frame)


def _is_empty(value) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))
