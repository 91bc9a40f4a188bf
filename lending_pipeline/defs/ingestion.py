"""Ingestion: one raw asset per source and day, PII pseudonymised at the door."""

import dagster as dg

from lending_pipeline.defs.common import (
    FEATURES,
    OWNERS,
    daily_partitions,
    days_at_once,
    quarantine_key,
    raw_key,
    validated_key,
)
from lending_pipeline.defs.metadata import runbook_metadata
from lending_pipeline.defs.resources import ByPartition, LakeStorage, PiiKey
from lending_pipeline.defs.withdrawal import withdraw
from lending_pipeline.ml.ingest import IngestError, ingest
from lending_pipeline.spec import PipelineSpec, SourceSpec


def build_raw_asset(spec: PipelineSpec, source: SourceSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_key(source.name),
        partitions_def=daily_partitions(spec),
        group_name="ingestion",
        kinds={source.format, "pyarrow"},
        owners=OWNERS,
        description=(
            f"{source.description.strip()}\n\nRead from `{source.files}` under the data dir; "
            f"every record kept with its file and row; PII columns "
            f"({', '.join(source.pii_columns) or 'none'}) replaced by keyed pseudonyms."
        ),
        metadata={"landing_files": source.files, "format": source.format},
    )
    def raw(context: dg.AssetExecutionContext, storage: LakeStorage, pii: PiiKey) -> dg.Output:
        keyring = pii.keyring()
        tables = ByPartition()
        for day in context.partition_keys:
            try:
                result = ingest(source, storage.path, day, keyring.pseudonymise)
            except IngestError as exc:
                stale = [raw_key(source.name), validated_key(source.name)]
                stale += [quarantine_key(source.name)]
                if source.name != spec.target.source:
                    stale.append(FEATURES)
                withdraw(context, spec, stale, day, f"ingestion of {source.name} failed")
                raise dg.Failure(
                    description=str(exc),
                    metadata={"partition": day, **runbook_metadata("ingestion_failure")},
                ) from None
            tables[day] = result.table
            context.add_asset_metadata(
                day_metadata(context, source, day, result, keyring), partition_key=day
            )
        return dg.Output(tables)

    return days_at_once(raw)


def day_metadata(context, source: SourceSpec, day: str, result, keyring) -> dict:
    """What one day's ingestion read, dropped and pseudonymised."""
    files = result.files
    undeclared = sorted({c for f in files for c in f.undeclared_columns})
    if undeclared:
        context.log.warning(
            f"{source.name} {day}: undeclared columns dropped at ingestion: {', '.join(undeclared)}"
        )
    return {
        "rows": result.rows,
        "files": ", ".join(f.path for f in files) or "(none)",
        "empty_files": sum(f.empty for f in files),
        "rows_with_encoding_errors": sum(f.encoding_errors for f in files),
        "malformed_rows": sum(f.malformed_rows for f in files),
        "missing_columns": ", ".join(sorted({c for f in files for c in f.missing_columns}))
        or "none",
        "undeclared_columns_dropped": ", ".join(undeclared) or "none",
        "pii_columns_pseudonymised": ", ".join(source.pii_columns) or "none",
        "pii_key_id": keyring.active_id,
    }


def build_ingestion_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    return [build_raw_asset(spec, source) for source in spec.sources]
