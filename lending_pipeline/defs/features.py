"""Features: `applicant_features` per day, with freshness and point-in-time checks."""

import dagster as dg
import pandas as pd

from lending_pipeline.defs.blocking import failed_partitions, require_passed_checks
from lending_pipeline.defs.common import (
    FEATURES,
    FRESHNESS_CHECK,
    OWNERS,
    POINT_IN_TIME_CHECK,
    DayChecks,
    blocking_check,
    check_outputs,
    daily_partitions,
    days_at_once,
    product_check,
    validated_key,
    validation_checks,
)
from lending_pipeline.defs.metadata import runbook_metadata
from lending_pipeline.defs.resources import BY_PARTITION, ByPartition
from lending_pipeline.defs.withdrawal import withdraw
from lending_pipeline.ml.drift import monitored_columns
from lending_pipeline.ml.features import build_features, freshness, point_in_time_violations
from lending_pipeline.spec import PipelineSpec


def build_features_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    sources = [s.name for s in spec.feature_sources]
    upstream_checks = [product_check(spec, k) for s in sources for k in validation_checks(spec, s)]
    check_specs = [
        blocking_check(
            POINT_IN_TIME_CHECK,
            "No joined source row is dated after the application date.",
            daily_partitions(spec),
        )
    ]
    if spec.features.freshness:
        rule = spec.features.freshness
        check_specs.append(
            blocking_check(
                FRESHNESS_CHECK,
                f"At most {rule.max_stale_share:.0%} of applications with "
                f"{rule.column} above {rule.max_days:g} days.",
                daily_partitions(spec),
            )
        )

    @dg.asset(
        key=FEATURES,
        ins={
            f"validated_{s}": dg.AssetIn(validated_key(s), metadata={BY_PARTITION: True})
            for s in sources
        },
        partitions_def=daily_partitions(spec),
        group_name="features",
        kinds={"pandas"},
        owners=OWNERS,
        check_specs=check_specs,
        description=(
            "One row per application: the sources joined point-in-time (latest row dated on or "
            "before the application date), the spec's derived features, the model inputs and the "
            "protected attributes (kept for fairness measurement, never used as inputs), and the "
            "source columns drift monitoring watches behind derived inputs. No PII columns."
        ),
    )
    def applicant_features(context: dg.AssetExecutionContext, **validated: ByPartition):
        days = context.partition_keys
        refuse_failed_inputs(context, spec, upstream_checks, days)
        built = {}
        for day in days:
            tables = {
                name.removeprefix("validated_"): frames[day] for name, frames in validated.items()
            }
            built[day] = build_features(spec, tables, extra_columns=monitored_columns(spec)[0])
            features = built[day].features
            context.add_asset_metadata(
                {
                    "rows": len(features),
                    "columns": len(features.columns),
                    "rows_ignored_dated_after_application": dg.MetadataValue.json(
                        built[day].excluded_after_application
                    ),
                    "applications_without_match": dg.MetadataValue.json(built[day].unmatched),
                },
                partition_key=day,
            )
        yield dg.Output(ByPartition((day, result.features) for day, result in built.items()))
        yield from check_outputs(context)
        checks = DayChecks(context)
        for day, result in built.items():
            for check_result in day_checks(context, result.features):
                yield checks.result(day, check_result)

    def day_checks(context: dg.AssetExecutionContext, features: pd.DataFrame):
        """The point-in-time and freshness checks of one day's features."""
        violations = point_in_time_violations(spec, features)
        clean = not any(violations.values())
        yield dg.AssetCheckResult(
            check_name=POINT_IN_TIME_CHECK.name,
            passed=clean,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "no feature uses data dated after the application"
                if clean
                else f"rows with source dates after the application date: {violations}"
            ),
            metadata={
                "violations_by_date_column": dg.MetadataValue.json(violations),
                **runbook_metadata("applicant_features_point_in_time", clean),
            },
        )
        fresh = freshness(spec, features)
        if fresh is not None:
            summary = (
                f"{fresh.stale} of {fresh.rows} applications ({fresh.stale_share:.2%}) have "
                f"{spec.features.freshness.column} above {fresh.max_days:g} days "
                f"(limit {fresh.max_share:.2%}); {fresh.missing} have none"
            )
            if not fresh.passed:
                context.log.error(summary)
            yield dg.AssetCheckResult(
                check_name=FRESHNESS_CHECK.name,
                passed=fresh.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=summary,
                metadata={
                    "rows": fresh.rows,
                    "stale_rows": fresh.stale,
                    "stale_share": round(fresh.stale_share, 6),
                    "max_stale_share": fresh.max_share,
                    "max_days": fresh.max_days,
                    "rows_without_value": fresh.missing,
                    "sample_stale_keys": ", ".join(fresh.stale_keys) or "none",
                    **runbook_metadata("applicant_features_freshness", fresh.passed),
                },
            )

    return days_at_once(applicant_features)


def refuse_failed_inputs(
    context: dg.AssetExecutionContext,
    spec: PipelineSpec,
    checks: list[dg.AssetCheckKey],
    days: list[str],
) -> None:
    """Refuse the run when a blocking check of an input failed on any of its days, naming the
    days and checks; those days' earlier features are withdrawn (a run of the other days
    builds them)."""
    if context.has_partition_key:
        try:
            require_passed_checks(context, checks)
        except dg.Failure:
            reason = "a blocking check of its inputs failed"
            withdraw(context, spec, [FEATURES], context.partition_key, reason)
            raise
        return
    failed = failed_partitions(context.instance, checks, days)
    if not failed:
        return
    for day in sorted(failed):
        withdraw(context, spec, [FEATURES], day, "a blocking check of its inputs failed")
    shown = "; ".join(f"partition {d}: {', '.join(sorted(c))}" for d, c in sorted(failed.items()))
    raise dg.Failure(
        description=(
            f"refusing to build {FEATURES.to_user_string()} on {shown}: the latest run of these "
            "blocking checks failed. Fix the data and re-materialize the upstream asset with its "
            "checks first."
        ),
        metadata={
            "failed_checks": ", ".join(sorted({c for n in failed.values() for c in n})),
            "partition": ", ".join(sorted(failed)),
            **runbook_metadata("blocked_by_failed_check"),
        },
    )
