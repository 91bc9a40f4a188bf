"""Validation: Pandera schema (blocking) and Great Expectations (blocking) per source and day.

`validate_<source>` writes two partitions, `validated_<source>` and `quarantine_<source>`, and
reports two blocking checks: `validated_<source>_schema` (Pandera, row rules and structure) and
`validated_<source>_expectations` (the spec's Great Expectations on the validated rows). Both run
in the validation step, so the data is read once.
"""

import dagster as dg
import pandas as pd

from lending_pipeline.defs.common import (
    FEATURES,
    OWNERS,
    DayChecks,
    blocking_check,
    check_outputs,
    daily_partitions,
    days_at_once,
    expectations_check,
    product_key,
    quarantine_key,
    raw_key,
    schema_check,
    validated_key,
)
from lending_pipeline.defs.metadata import (
    counts_table,
    frame_table,
    masked_quarantine_sample,
    runbook_metadata,
)
from lending_pipeline.defs.resources import BY_PARTITION, ByPartition
from lending_pipeline.defs.withdrawal import withdraw
from lending_pipeline.ml.expectations import partition_passes, run_expectations
from lending_pipeline.ml.validation import validate_days
from lending_pipeline.spec import PipelineSpec, SourceSpec


def build_validation_asset(spec: PipelineSpec, source: SourceSpec) -> dg.AssetsDefinition:
    check = schema_check(source.name)
    check_specs = [
        blocking_check(
            check,
            f"Pandera schema of `{source.name}` from the spec: dtypes, nulls, ranges, "
            "allowed values, unique key, dates; structural problems fail it.",
            daily_partitions(spec),
        )
    ]
    if source.expectations:
        check_specs.append(
            blocking_check(
                expectations_check(source.name),
                f"Great Expectations on `{source.name}`: "
                + "; ".join(e.expectation.removeprefix("expect_") for e in source.expectations),
                daily_partitions(spec),
            )
        )

    @dg.multi_asset(
        name=f"validate_{source.name}",
        outs={
            "validated": dg.AssetOut(
                key=validated_key(source.name),
                group_name="validation",
                kinds={"pandera", "pandas"},
                owners=OWNERS,
                description=(
                    f"Rows of `{source.name}` that pass every rule of the spec, typed. "
                    "Structural problems and a quarantine share above "
                    f"{source.max_quarantine_share:.1%} fail the blocking schema check."
                ),
            ),
            "quarantine": dg.AssetOut(
                key=quarantine_key(source.name),
                group_name="validation",
                kinds={"pandas"},
                owners=OWNERS,
                description=(
                    f"Rows of `{source.name}` that broke a rule, as ingested (PII pseudonymised), "
                    "with the rule, column and detail; validated + quarantined = ingested."
                ),
            ),
        },
        ins={"raw": dg.AssetIn(raw_key(source.name), metadata={BY_PARTITION: True})},
        partitions_def=daily_partitions(spec),
        check_specs=check_specs,
    )
    def validate(context: dg.AssetExecutionContext, raw: ByPartition):
        dated = source.name == spec.entity.source
        outcomes = validate_days(raw, source, partition_dated=dated)
        valid, quarantine = ByPartition(), ByPartition()
        for day, outcome in outcomes.items():
            valid[day], quarantine[day] = outcome.valid, outcome.quarantine
            context.add_asset_metadata(
                {"rows": len(outcome.valid), "input_rows": outcome.input_rows},
                asset_key=product_key(spec, validated_key(source.name)),
                partition_key=day,
            )
            context.add_asset_metadata(
                {"rows": outcome.quarantined_rows, "by_rule": counts_table(outcome.rule_counts)},
                asset_key=product_key(spec, quarantine_key(source.name)),
                partition_key=day,
            )
        yield dg.Output(valid, output_name="validated")
        yield dg.Output(quarantine, output_name="quarantine")
        yield from check_outputs(context)
        checks = DayChecks(context)
        for day, outcome in outcomes.items():
            yield from day_results(context, checks, day, outcome)

    def day_results(context: dg.AssetExecutionContext, checks: DayChecks, day: str, outcome):
        """The checks of one day: the schema's verdict, then the expectations'."""
        expectations = None
        if source.expectations:
            expectations = expectations_result(spec, source, day, outcome.valid)
        failed = not outcome.passed or (expectations is not None and not expectations.passed)
        withdrawn = []
        if failed and source.name != spec.target.source:
            reason = f"validation of {source.name} failed"
            withdrawn = withdraw(context, spec, [FEATURES], day, reason)
        if not outcome.passed:
            context.log.error(outcome.failure_summary())
        schema = dg.AssetCheckResult(
            asset_key=product_key(spec, check.asset_key),
            check_name=check.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=outcome.failure_summary(),
            metadata={
                "input_rows": outcome.input_rows,
                "valid_rows": len(outcome.valid),
                "quarantined_rows": outcome.quarantined_rows,
                "reconciled": outcome.reconciled,
                "quarantine_share": round(outcome.quarantine_share, 6),
                "max_quarantine_share": outcome.max_share,
                "structural_problems": "\n".join(outcome.structural) or "none",
                "by_rule": counts_table(outcome.rule_counts),
                "sample_failing_rows": masked_quarantine_sample(outcome.quarantine, source),
                **runbook_metadata("validated_source_schema", outcome.passed),
                "withdrawn_downstream": ", ".join(withdrawn) or "none",
            },
        )
        yield checks.result(day, schema)
        if expectations is not None:
            if not expectations.passed:
                context.log.error(expectations.description)
            yield checks.result(day, expectations)

    return days_at_once(validate)


def expectations_result(
    spec: PipelineSpec, source: SourceSpec, day: str, valid: pd.DataFrame
) -> dg.AssetCheckResult:
    """Run the source's Great Expectations suite on the validated rows of one day."""
    check = expectations_check(source.name)
    outcomes = run_expectations(valid, source.expectations, check.name)
    failed = [o for o in outcomes if not o.success]
    table = pd.DataFrame(
        [
            {
                "expectation": o.expectation,
                "column": o.column or "(table)",
                "observed": o.observed,
                "expected": o.expected,
                "result": "pass" if o.success else "FAIL",
            }
            for o in outcomes
        ]
    )
    summary = (
        "; ".join(o.describe() for o in failed)
        if failed
        else f"all {len(outcomes)} expectations met"
    )
    passed = partition_passes(outcomes, len(valid), source.required)
    if valid.empty:
        summary = (
            f"not evaluated: no validated rows (validated_{source.name}_schema names the cause)"
            if source.required
            else "no rows in this partition: nothing to check"
        )
    return dg.AssetCheckResult(
        asset_key=product_key(spec, check.asset_key),
        check_name=check.name,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{source.name} partition {day}: {summary}",
        metadata={
            "rows": len(valid),
            "failed_expectations": len(failed),
            "expectations": frame_table(table),
            **runbook_metadata("validated_source_expectations", passed),
        },
    )


def build_validation_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    return [build_validation_asset(spec, s) for s in spec.sources]
