"""Names and settings shared by the Dagster definitions of every stage."""

from __future__ import annotations

import warnings

import dagster as dg

from lending_pipeline.defs.resources import spec_data_dir
from lending_pipeline.partitions import partition_start
from lending_pipeline.products import key_prefix
from lending_pipeline.spec import PipelineSpec

OWNERS = ["team:credit-risk-data"]
# A backfill of the daily assets launched in the UI runs at most this many days per run.
DAYS_PER_RUN = 31


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


def days_at_once(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """A daily asset whose step processes a range of days in one run (each day stored, checked
    and reported on its own): a backfill runs `DAYS_PER_RUN` days per run, not one run per day.
    Backfill policies are a beta API in Dagster 1.13, whose warning is silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=DAYS_PER_RUN)
        return asset.with_attributes(backfill_policy=policy)


class DayChecks:
    """A step's check results, day by day: as they are in a run of one partition; in a run over
    a range of days (one or more), evaluations recorded for each day's partition (blocking as
    its spec says, against the day's latest materialization). One per step: it looks up each
    asset's materializations of the run's days once."""

    def __init__(self, context: dg.AssetExecutionContext):
        self.context = context
        self._latest: dict[dg.AssetKey, dict] = {}

    def result(
        self, day: str, result: dg.AssetCheckResult
    ) -> dg.AssetCheckResult | dg.AssetCheckEvaluation:
        context = self.context
        if context.has_partition_key:
            return result
        key = dg.AssetCheckKey(
            dg.AssetKey.from_coercible(result.asset_key or context.asset_key), result.check_name
        )
        spec = next(s for s in context.assets_def.check_specs if s.key == key)
        return dg.AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=result.passed,
            metadata=result.metadata,
            target_materialization_data=self._target(key.asset_key, day),
            severity=result.severity,
            description=result.description,
            blocking=spec.blocking,
            partition=day,
        )

    def _target(self, asset_key: dg.AssetKey, day: str):
        """The day's latest materialization of the asset, as a check evaluation's target."""
        from dagster._core.definitions.asset_checks.asset_check_evaluation import (
            AssetCheckEvaluationTargetMaterializationData,
        )

        if asset_key not in self._latest:
            days = self.context.partition_keys
            records = self.context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=days), limit=len(days)
            ).records
            latest = {}
            for record in records:  # newest first
                latest.setdefault(record.partition_key, record)
            self._latest[asset_key] = latest
        record = self._latest[asset_key].get(day)
        if record is None:
            return None
        return AssetCheckEvaluationTargetMaterializationData(
            run_id=record.event_log_entry.run_id,
            storage_id=record.storage_id,
            timestamp=record.timestamp,
        )


def check_outputs(context: dg.AssetExecutionContext) -> list[dg.Output]:
    """In a run over a range of days, the outputs that mark the step's checks as executed (one
    per check; their results are the per-day evaluations). Nothing in a run of one partition."""
    if context.has_partition_key:
        return []
    layer = context.op_execution_context.job_def.asset_layer
    return [
        dg.Output(None, output_name=layer.get_op_output_name(key))
        for key in context.selected_asset_check_keys
    ]
