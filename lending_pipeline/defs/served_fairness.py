"""`served_fairness`: approval rates and adverse impact of the decisions served each day (from the
audit log), with the check `served_fairness_adverse_impact`; part of the monitoring job."""

import datetime as dt
import json

import dagster as dg

from lending_pipeline.defs.common import OWNERS, blocking_check, daily_partitions, validated_key
from lending_pipeline.defs.metadata import frame_table, runbook_metadata
from lending_pipeline.defs.resources import read_partitions, spec_data_dir
from lending_pipeline.ml import audit, data_keys
from lending_pipeline.ml.served_fairness import (
    attach_attributes,
    served_decisions,
    served_fairness,
)
from lending_pipeline.spec import PipelineSpec

SERVED_FAIRNESS = dg.AssetKey("served_fairness")
SERVED_AIR = dg.AssetCheckKey(SERVED_FAIRNESS, "served_fairness_adverse_impact")


def build_served_fairness_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    settings = spec.drift.served_fairness
    attributes = list(spec.protected_attributes)
    partitions = daily_partitions(spec)
    check = blocking_check(
        SERVED_AIR,
        f"On days with at least {settings.min_decisions} served decisions, every protected "
        f"attribute's lowest approval-rate ratio is at least {settings.min_adverse_impact_ratio:g} "
        f"(groups of at least gates.min_group_size {spec.gates.min_group_size}); an attribute "
        "with no two such groups is not measurable and fails (WARN).",
        partitions,
        blocking=False,
    )

    @dg.asset(
        key=SERVED_FAIRNESS,
        partitions_def=partitions,
        group_name="monitoring",
        kinds={"pandas"},
        owners=OWNERS,
        check_specs=[check],
        description=(
            "The decisions actually served on the day (decisions of record, from the audit "
            "log): approval rate overall and per group of each protected attribute, and the "
            "adverse impact ratio; attributes a request did not carry are joined by "
            "drift.served_fairness.join_on. Aggregates only."
        ),
    )
    def served_fairness_asset(context: dg.AssetExecutionContext):
        day = context.partition_key
        data_dir = spec_data_dir(spec.name)
        join = settings.join_on
        try:
            key = audit.audit_key()
        except audit.AuditKeyError:
            key = None  # figures from entries whose MACs were not checked (said in metadata)
        try:
            reader = audit.open_reader(data_dir)
        except audit.AuditStoreError as exc:
            decisions, note = None, f"no audit log to read ({exc})"
        else:
            sealed = data_keys.open_inputs_reader(data_dir)
            try:
                decisions = served_decisions(
                    reader.entries(), day, attributes, join, key, sealed.inputs
                )
            finally:
                sealed.close()
                reader.close()
            note = ""
        if decisions is not None and join and len(decisions):
            unauthentic = decisions.attrs.get("unauthentic", 0)
            decisions = attach_attributes(decisions, lookup(day), attributes)
            decisions.attrs["unauthentic"] = unauthentic
        if decisions is None:
            decisions = served_decisions([], day, attributes)
        result = served_fairness(
            decisions,
            day,
            attributes,
            spec.gates.min_group_size,
            settings.min_decisions,
            settings.min_adverse_impact_ratio,
        )
        if note:
            result.reason = note
        folder = data_dir / "reports" / "served_fairness"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{day}.json"
        path.write_text(json.dumps(result.summary(), indent=2, sort_keys=True), encoding="utf-8")
        metadata = {
            "decisions": result.decisions,
            "approval_rate": (
                round(result.approval_rate, 4) if result.approval_rate is not None else "n/a"
            ),
            "overridden": result.overridden,
            "macs_checked": key is not None,
            "unauthentic_entries": result.unauthentic,
            "min_ratio": round(result.min_ratio, 4) if result.min_ratio is not None else "n/a",
            "min_group": f"{result.min_attribute}={result.min_group}"
            if result.min_group
            else "n/a",
            "groups": frame_table(result.group_table()),
            "report": dg.MetadataValue.path(str(path)),
        }
        yield dg.Output(result.summary(), metadata=metadata)
        yield dg.AssetCheckResult(
            check_name=SERVED_AIR.name,
            passed=result.passed,
            severity=dg.AssetCheckSeverity.ERROR
            if result.measurable
            else dg.AssetCheckSeverity.WARN,
            description=result.describe(),
            metadata={
                "judged": result.judged,
                "measurable": result.measurable,
                "decisions": result.decisions,
                "min_decisions": settings.min_decisions,
                "threshold": settings.min_adverse_impact_ratio,
                "min_ratio": metadata["min_ratio"],
                "groups": metadata["groups"],
                **runbook_metadata(SERVED_AIR.name, result.passed),
            },
        )

    def lookup(day: str):
        """The protected attributes by join value, from their validated sources' days up to the
        decision day (`lookback_days` back)."""
        first = dt.date.fromisoformat(day) - dt.timedelta(days=settings.lookback_days)
        days = [
            (first + dt.timedelta(days=i)).isoformat() for i in range(settings.lookback_days + 1)
        ]
        frames = []
        data_dir = spec_data_dir(spec.name)
        for source in spec.feature_sources:
            held = [a for a in attributes if a in source.columns]
            if held:
                table = read_partitions(data_dir, validated_key(source.name), days)
                if len(table):
                    frames.append(table[[settings.join_on, *held]].set_index(settings.join_on))
        if not frames:
            return None
        joined = frames[0]
        for frame in frames[1:]:
            joined = joined.join(frame, how="outer", rsuffix="_other")
        return joined

    return [served_fairness_asset]
