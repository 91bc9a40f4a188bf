"""Names and settings shared by the Dagster definitions of every stage."""

from __future__ import annotations

import warnings

import dagster as dg

from lending_pipeline.defs.resources import resolve_data_dir
from lending_pipeline.partitions import partition_start
from lending_pipeline.spec import PipelineSpec

OWNERS = ["team:credit-risk-data"]


def daily_partitions(spec: PipelineSpec) -> dg.DailyPartitionsDefinition:
    """Daily partitions by application date, from the spec's start date (or the first landed
    day) to yesterday (UTC)."""
    start = partition_start(spec, resolve_data_dir())
    return dg.DailyPartitionsDefinition(start_date=start.isoformat())


def raw_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{source}")


def validated_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(f"validated_{source}")


def quarantine_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(f"quarantine_{source}")


def schema_check(source: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(validated_key(source), f"validated_{source}_schema")


def expectations_check(source: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(validated_key(source), f"validated_{source}_expectations")


def validation_checks(spec: PipelineSpec, source: str) -> list[dg.AssetCheckKey]:
    """The blocking checks of one validated source."""
    keys = [schema_check(source)]
    if spec.source_by_name[source].expectations:
        keys.append(expectations_check(source))
    return keys


FEATURES = dg.AssetKey("applicant_features")
FRESHNESS_CHECK = dg.AssetCheckKey(FEATURES, "applicant_features_freshness")
POINT_IN_TIME_CHECK = dg.AssetCheckKey(FEATURES, "applicant_features_point_in_time")


def blocking_check(
    check: dg.AssetCheckKey,
    description: str,
    partitions_def: dg.PartitionsDefinition | None = None,
    blocking: bool = True,
) -> dg.AssetCheckSpec:
    """A check spec, blocking unless told otherwise; with `partitions_def` its results are
    recorded per partition (a preview API in Dagster 1.13, whose warning is silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            check.name,
            asset=check.asset_key,
            blocking=blocking,
            partitions_def=partitions_def,
            description=description,
        )
