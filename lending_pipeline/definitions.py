"""The Dagster code location: assembles assets, checks, jobs and resources from the spec."""

from __future__ import annotations

import dagster as dg

from lending_pipeline.defs.features import build_features_asset
from lending_pipeline.defs.ingestion import build_ingestion_assets
from lending_pipeline.defs.resources import (
    PII_KEY_ENV,
    LakeStorage,
    PartitionedParquetIOManager,
    PiiKey,
)
from lending_pipeline.defs.validation import build_validation_assets
from lending_pipeline.spec import PipelineSpec, load_spec

DAILY_JOB = "daily_ingestion_job"


def build_definitions(spec: PipelineSpec) -> dg.Definitions:
    """Every definition of one pipeline spec."""
    assets = [
        *build_ingestion_assets(spec),
        *build_validation_assets(spec),
        build_features_asset(spec),
    ]
    daily = dg.define_asset_job(
        DAILY_JOB,
        selection=dg.AssetSelection.groups("ingestion", "validation", "features"),
        description="Ingest, validate and build the features of one day's partition.",
    )
    return dg.Definitions(
        assets=assets,
        jobs=[daily],
        resources={
            "storage": LakeStorage(),
            "pii": PiiKey(key=dg.EnvVar(PII_KEY_ENV)),
            "io_manager": PartitionedParquetIOManager(),
        },
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location of the spec in force (`LENDING_PIPELINE_SPEC`)."""
    return build_definitions(load_spec())
