"""The challenger in the champion's shadow: its daily comparison on served traffic and its
realised performance by application-month vintage (from the audit log's `shadow` entries)."""

import datetime as dt

import dagster as dg
import pandas as pd
from pydantic import Field

from lending_pipeline.defs.common import OWNERS, blocking_check, daily_partitions, validated_key
from lending_pipeline.defs.metadata import frame_table, runbook_metadata
from lending_pipeline.defs.resources import read_partitions, spec_data_dir
from lending_pipeline.ml import audit, data_keys
from lending_pipeline.ml.shadow_record import daily_comparison, paired, vintages, worse_vintages
from lending_pipeline.spec import PipelineSpec

COMPARISON = dg.AssetKey("shadow_comparison")
VINTAGES = dg.AssetKey("challenger_vintages")
NOT_WORSE = dg.AssetCheckKey(VINTAGES, "challenger_vintages_not_worse")
SHADOW_GROUP = "challenger"


class VintageConfig(dg.Config):
    """Run config of `challenger_vintages`."""

    as_of: str = Field(
        default="",
        description="judge outcomes matured by this date (YYYY-MM-DD; default: today, UTC)",
    )


def monthly_partitions(spec: PipelineSpec) -> dg.MonthlyPartitionsDefinition:
    start = daily_partitions(spec).start
    return dg.MonthlyPartitionsDefinition(start_date=f"{start:%Y-%m}-01", end_offset=1)


def _pairs(spec: PipelineSpec, day_prefix: str) -> pd.DataFrame:
    """Paired decision and shadow entries logged on days starting with `day_prefix` (none
    without an audit log: a missing SQLite log is not created here)."""
    data_dir = spec_data_dir(spec.name)
    key, protected = spec.entity.key, list(spec.protected_attributes)
    if not audit.configured_url(data_dir) and not audit.default_path(data_dir).exists():
        return paired([], key, protected)
    store = audit.open_store(data_dir)
    sealed = data_keys.open_inputs_reader(data_dir)
    try:
        entries = [e for e in store.entries() if e.time.startswith(day_prefix)]
        return paired(entries, key, protected, sealed.inputs)
    finally:
        sealed.close()
        store.close()


def build_shadow_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    protected = list(spec.protected_attributes)
    tolerance = spec.drift.max_auc_drop

    @dg.asset(
        key=COMPARISON,
        partitions_def=daily_partitions(spec),
        group_name="monitoring",
        kinds={"pandas"},
        owners=OWNERS,
        description=(
            "The champion against the challenger scored in its shadow, on the day's served "
            "applications: decision agreement, approval rates overall and per protected group, "
            "PD distributions (from the audit log; aggregates only)."
        ),
    )
    def shadow_comparison(context: dg.AssetExecutionContext):
        day = context.partition_key
        summary = daily_comparison(_pairs(spec, day), protected)
        metadata: dict = {"rows": summary["rows"]}
        if summary["rows"]:
            for name in (
                "decision_agreement",
                "champion_approval_rate",
                "challenger_approval_rate",
                "champion_mean_pd",
                "challenger_mean_pd",
            ):
                metadata[name] = dg.MetadataValue.float(round(summary[name], 4))
            metadata["versions"] = (
                f"champion {', '.join(summary['champion_versions'])}; "
                f"challenger {', '.join(summary['challenger_versions'])}"
            )
            groups = [
                {"attribute": attribute, "group": group, **rates}
                for attribute, by_group in summary["by_group"].items()
                for group, rates in by_group.items()
            ]
            if groups:
                metadata["approval_by_group"] = frame_table(pd.DataFrame(groups).round(4))
        else:
            metadata["note"] = "no shadow scores that day (no challenger, or no traffic)"
        return dg.Output(summary, metadata=metadata)

    @dg.asset(
        key=VINTAGES,
        partitions_def=monthly_partitions(spec),
        group_name=SHADOW_GROUP,
        kinds={"pandas"},
        owners=OWNERS,
        check_specs=[
            blocking_check(
                NOT_WORSE,
                f"On matured application months, the challenger's ROC-AUC on served traffic is "
                f"not more than max_auc_drop {tolerance:g} below the champion's.",
                monthly_partitions(spec),
                blocking=False,
            )
        ],
        description=(
            "Realised performance by application-month vintage of the champion and the "
            "challenger on the applications actually served, once outcomes have matured "
            "(target.maturity_days): ROC-AUC, KS, bad rate among approved, calibration gap. "
            "The evidence a promotion of the challenger can cite."
        ),
    )
    def challenger_vintages(context: dg.AssetExecutionContext, config: VintageConfig):
        month = context.partition_key[:7]
        as_of = (
            dt.date.fromisoformat(config.as_of) if config.as_of else dt.datetime.now(dt.UTC).date()
        )
        pairs = _pairs(spec, month)
        days = [d for d in daily_partitions(spec).get_partition_keys() if d <= as_of.isoformat()]
        outcomes = read_partitions(
            spec_data_dir(spec.name), validated_key(spec.target.source), days
        )
        if outcomes.empty:
            labels = pd.DataFrame(columns=["key", "target"])
        else:
            labels = outcomes[[spec.entity.key, spec.target.column]].rename(
                columns={spec.entity.key: "key", spec.target.column: "target"}
            )
        table = vintages(pairs, labels, as_of, spec.target.maturity_days, spec.drift.min_rows)
        worse = worse_vintages(table, tolerance)
        judged = bool(len(table)) and bool(table["judged"].any())
        metadata = {
            "served_with_shadow": len(pairs),
            "matured_rows": int(table["rows"].sum()) if len(table) else 0,
            "vintages": frame_table(table.round(4)) if len(table) else "none matured yet",
        }
        yield dg.Output({"month": month, "vintages": table.to_dict("records")}, metadata=metadata)
        yield dg.AssetCheckResult(
            check_name=NOT_WORSE.name,
            passed=not worse,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"challenger worse than the champion on {', '.join(worse)}"
                if worse
                else "not judged yet: no matured month with enough rows"
                if not judged
                else "the challenger is not worse on any matured month"
            ),
            metadata={"judged": judged, **runbook_metadata(NOT_WORSE.name, not worse)},
        )

    return [shadow_comparison, challenger_vintages]
