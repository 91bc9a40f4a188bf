"""Names and settings shared by the Dagster definitions of every stage."""

from __future__ import annotations

import warnings

import dagster as dg

from lending_pipeline.defs.resources import spec_data_dir
from lending_pipeline.partitions import partition_start
from lending_pipeline.products import key_prefix
from lending_pipeline.spec import PipelineSpec

OWNERS = ["team:credit-risk-data"]


def daily_partitions(spec: PipelineSpec) -> dg.DailyPartitionsDefinition:
    """Daily partitions by application date, from the spec's start date (or the first landed
    day) to yesterday (UTC)."""
    start = partition_start(spec, spec_data_dir(spec.name))
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


def product_key(spec: PipelineSpec, key: dg.AssetKey) -> dg.AssetKey:
    """An asset's key in its product: under the product's prefix when several run side by side
    (`lending_pipeline.products`); the definitions name bare keys and are prefixed as a whole
    (`in_product`), code that names a key at run time passes it through here."""
    return dg.AssetKey([*key_prefix(spec.name), *key.path])


def product_check(spec: PipelineSpec, check: dg.AssetCheckKey) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(product_key(spec, check.asset_key), check.name)


def in_product(spec: PipelineSpec, assets: list[dg.AssetsDefinition]) -> list:
    """Every asset, check and dependency of `assets` under the product's key prefix."""
    if not key_prefix(spec.name):
        return assets
    prefixed = []
    for asset in assets:
        keys = {*asset.keys, *asset.dependency_keys, *(c.asset_key for c in asset.check_keys)}
        prefixed.append(
            asset.with_attributes(asset_key_replacements={k: product_key(spec, k) for k in keys})
        )
    return prefixed
