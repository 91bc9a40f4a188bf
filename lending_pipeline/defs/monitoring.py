"""Monitoring: `drift_report` per day, the champion's training population vs the day's
applications (and the inputs the scoring service saw), with three non-blocking checks."""

import datetime as dt
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from lending_pipeline.defs.common import (
    FEATURES,
    OWNERS,
    blocking_check,
    daily_partitions,
    validated_key,
)
from lending_pipeline.defs.metadata import (
    frame_table,
    image_markdown,
    metric_key,
    mlflow_run_metadata,
    rounded,
    runbook_metadata,
)
from lending_pipeline.defs.resources import (
    MlflowTracking,
    read_partitions,
    resolve_data_dir,
    spec_data_dir,
)
from lending_pipeline.links import evidently_snapshot_link, report_link
from lending_pipeline.ml import audit, dashboard, data_keys, tracking
from lending_pipeline.ml.drift import (
    NOT_JUDGED,
    DriftResult,
    check_drift,
    monitored_columns,
    plot_psi,
    write_evidently_report,
)
from lending_pipeline.ml.monitoring import (
    DECISION,
    Champion,
    RealisedPerformance,
    load_champion,
    matured_cohort_days,
    realised_performance,
    served_features,
)
from lending_pipeline.ml.train import inputs, labelled
from lending_pipeline.spec import PipelineSpec

DRIFT_REPORT = dg.AssetKey("drift_report")
WITHIN_LIMITS = dg.AssetCheckKey(DRIFT_REPORT, "drift_report_within_limits")
MISSING_FIELDS = dg.AssetCheckKey(DRIFT_REPORT, "drift_report_missing_fields")
PERFORMANCE = dg.AssetCheckKey(DRIFT_REPORT, "drift_report_realised_performance")
DRIFT_CHECKS = (WITHIN_LIMITS, MISSING_FIELDS, PERFORMANCE)


def reports_dir(data_dir: Path) -> Path:
    return data_dir / "reports" / "drift"


def feature_table(result: DriftResult) -> pd.DataFrame:
    """Per-feature aggregates for the UI, worst PSI first."""
    table = result.table.sort_values("psi", ascending=False)
    return pd.DataFrame(
        {
            "feature": table.index,
            "kind": table["kind"],
            "psi": table["psi"].round(4),
            "status": table["status"],
            "test": table["test"],
            "p_value": table["p_value"].map(lambda p: f"{p:.3g}"),
            "missing_reference": table["missing_reference"].astype(float).round(4),
            "missing_current": table["missing_current"].astype(float).round(4),
        }
    )


def worst_feature(result: DriftResult) -> tuple[str, float]:
    """The feature (or `score`) with the highest PSI."""
    psi = {name: float(value) for name, value in result.table["psi"].items()}
    if result.score is not None:
        psi["score"] = result.score.psi
    return max(psi.items(), key=lambda item: item[1], default=("none", 0.0))


def not_judged_checks(reason: str):
    for check in DRIFT_CHECKS:
        yield dg.AssetCheckResult(
            check_name=check.name,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"not judged: {reason}",
            metadata={"judged": False, **runbook_metadata(check.name, passed=True)},
        )


class DriftReportConfig(dg.Config):
    """Run config of `drift_report`."""

    evidently_report: bool = Field(
        default=True,
        description=(
            "Write the Evidently HTML report (about 0.3-1 s per monitored column on a sample); "
            "the tiers and checks never depend on it."
        ),
    )
    evidently_dashboard: bool = Field(
        default=True,
        description=(
            "Store the day's snapshot in the Evidently workspace the drift dashboard shows "
            "(`make dev`, about a second a day)."
        ),
    )


def build_monitoring_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    settings = spec.drift
    partitions = daily_partitions(spec)
    columns, categorical = monitored_columns(spec)
    check_specs = [
        blocking_check(
            WITHIN_LIMITS,
            f"No monitored feature nor the score has PSI at or above psi_warn "
            f"{settings.psi_warn:g} (WARN) or psi_retrain {settings.psi_retrain:g} (ERROR; the "
            "drift sensor requests a retraining).",
            partitions,
            blocking=False,
        ),
        blocking_check(
            MISSING_FIELDS,
            f"No monitored field's missing rate rose by {settings.missing_spike:g} or more "
            "over the reference.",
            partitions,
            blocking=False,
        ),
        blocking_check(
            PERFORMANCE,
            f"On matured cohorts after its training range, the champion's ROC-AUC is at most "
            f"{settings.max_auc_drop:g} below and its bad rate among approved at most "
            f"{settings.max_bad_rate_rise:g} above what its evaluation promised.",
            partitions,
            blocking=False,
        ),
    ]

    @dg.asset(
        key=DRIFT_REPORT,
        ins={"features": dg.AssetIn(FEATURES)},
        partitions_def=partitions,
        group_name="monitoring",
        kinds={"evidently", "mlflow"},
        owners=OWNERS,
        check_specs=check_specs,
        description=(
            "The day's applications against the champion's training population (the "
            "applicant_features days of its partition_range): PSI per monitored feature "
            "(reference-quantile bins), KS/chi-square, missing-field spikes and the drift of the "
            "champion's predicted probability; the same for the inputs the scoring service saw "
            "that day (from the audit log), reported separately; an Evidently HTML report and a "
            "PSI chart, logged to MLflow. Aggregates only, never row values."
        ),
    )
    def drift_report(
        context: dg.AssetExecutionContext,
        config: DriftReportConfig,
        mlflow: MlflowTracking,
        features: pd.DataFrame,
    ):
        day = context.partition_key
        tracking_config = mlflow.config(spec.name)
        data_dir = spec_data_dir(spec.name)
        champion = load_champion(tracking_config)
        if champion is None:
            reason = "no champion yet: nothing to compare the day's applications against"
            yield dg.Output(
                {"day": day, "judged": False, "worst_tier": NOT_JUDGED, "reason": reason},
                metadata={"worst_tier": NOT_JUDGED, "champion_version": "none", "note": reason},
            )
            yield from not_judged_checks(reason)
            return

        reference = read_partitions(data_dir, FEATURES, champion.training_days)

        def score(frame: pd.DataFrame) -> np.ndarray | None:
            if frame.empty:
                return None
            return champion.model.predict_proba(inputs(spec, frame))[:, 1]

        reference_scores, current_scores = score(reference), score(features)
        result = check_drift(
            features,
            reference,
            settings,
            columns,
            categorical,
            current_scores=current_scores,
            reference_scores=reference_scores,
        )
        served, served_prob, decisions = served_inputs(day)
        served_result = None
        if len(served):
            served_result = check_drift(
                served,
                reference,
                settings,
                columns,
                categorical,
                current_scores=served_prob,
                reference_scores=reference_scores,
            )
        performance = judge_performance(day, champion)

        folder = reports_dir(data_dir)
        chart = plot_psi(result, folder / f"{day}_psi.png")
        report = None
        if result.judged and config.evidently_report:
            report = write_evidently_report(
                features,
                reference,
                folder / f"{day}.html",
                columns,
                categorical,
                sample_size=settings.report_sample_rows,
            )
        summary = {
            "day": day,
            "champion_version": champion.version,
            "reference_days": f"{champion.training_days[0]}..{champion.training_days[-1]}",
            **result.summary(),
            "served": served_result.summary() if served_result else None,
            "realised_performance": asdict(performance),
        }
        run_id = log_to_mlflow(
            tracking_config, context.run_id, day, champion, result, chart, report
        )
        summary["mlflow_run_id"] = run_id
        day_link = None
        if config.evidently_dashboard and len(features) and len(reference):
            snapshot = dashboard.day_snapshot(
                spec,
                day,
                features,
                reference,
                current_scores,
                reference_scores,
                decisions,
                {"champion_version": champion.version, "worst_tier": result.worst_tier},
            )
            shared = dashboard.workspace_dir(resolve_data_dir())  # one for all products
            project, snapshot_id = dashboard.publish(shared, spec, day, snapshot)
            day_link = evidently_snapshot_link(project, snapshot_id)

        feature, psi = worst_feature(result)
        metadata = {
            "worst_tier": result.worst_tier,
            "champion_version": champion.version,
            "reference_days": summary["reference_days"],
            "rows_current": result.rows_current,
            "rows_reference": result.rows_reference,
            "drifted_features": dg.MetadataValue.json(result.drifted),
            "worst_feature": feature,
            "worst_psi": round(psi, 4),
            "missing_field_spikes": ", ".join(result.missing_spikes) or "none",
            "score_psi": round(result.score.psi, 4) if result.score else "n/a",
            "score_tier": result.score.status if result.score else "n/a",
            "features": frame_table(feature_table(result)),
            "psi_chart": image_markdown({f"PSI per feature, {day}": chart}),
            **{metric_key("psi", name): rounded(psi) for name, psi in result.table["psi"].items()},
            "evidently_report": (
                dg.MetadataValue.url(report_link(data_dir, report))
                if report
                else "not written (too few rows, or switched off in the run config)"
            ),
            "drift_dashboard": (
                dg.MetadataValue.url(day_link)
                if day_link
                else "not stored (no rows, or switched off in the run config)"
            ),
            "served_decisions": served_result.rows_current if served_result else 0,
            "served_worst_tier": served_result.worst_tier if served_result else "no decisions",
            "served_drifted_features": dg.MetadataValue.json(
                served_result.drifted if served_result else {}
            ),
            "realised_performance": performance.describe(),
            **mlflow_run_metadata(tracking_config.tracking_uri, run_id),
        }
        yield dg.Output(summary, metadata=metadata)
        yield within_limits_result(result, feature, psi, day_link)
        yield missing_fields_result(result)
        yield performance_result(performance)

    def served_inputs(day: str) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
        """Monitored columns and probabilities of the day's audited decisions, and the decisions
        with their reason codes (none without a log: a missing SQLite log is not created here)."""
        data_dir = spec_data_dir(spec.name)
        if not audit.configured_url(data_dir) and not audit.default_path(data_dir).exists():
            return pd.DataFrame(columns=columns), np.empty(0), dashboard.served_decisions([])
        store = audit.open_store(data_dir)
        sealed = data_keys.open_inputs_reader(data_dir)
        try:
            entries = [e for e in store.entries() if e.kind == DECISION and e.time.startswith(day)]
            served, prob = served_features(spec, entries, day, sealed.inputs)
            return served, prob, dashboard.served_decisions(e.data for e in entries)
        finally:
            sealed.close()
            store.close()

    def judge_performance(day: str, champion: Champion) -> RealisedPerformance:
        data_dir = spec_data_dir(spec.name)
        days = matured_cohort_days(
            day,
            champion.training_days,
            spec.target.maturity_days,
            settings.performance_window_days,
        )
        frame = read_partitions(data_dir, FEATURES, days)
        outcomes = read_partitions(data_dir, validated_key(spec.target.source), days)
        if frame.empty or outcomes.empty:
            matured = pd.DataFrame(columns=["target"])
        else:
            matured = labelled(spec, frame, outcomes, dt.date.fromisoformat(day))
        prob = champion.model.predict_proba(inputs(spec, matured))[:, 1] if len(matured) else None
        return realised_performance(matured, prob, champion, days, settings)

    def within_limits_result(
        result: DriftResult, feature: str, psi: float, day_link: str | None = None
    ):
        tier = result.worst_tier
        if tier == NOT_JUDGED:
            description = (
                f"not judged: {result.rows_current} rows today, {result.rows_reference} in the "
                f"reference (min_rows {settings.min_rows})"
            )
        elif tier == "ok":
            description = f"within limits: worst PSI {psi:.3f} ({feature}) < {settings.psi_warn:g}"
        else:
            drifted = ", ".join(f"{k} {v:.3f}" for k, v in result.drifted.items()) or "none"
            score = f"; score PSI {result.score.psi:.3f}" if result.score else ""
            description = f"{tier} tier: features at or above psi_warn: {drifted}{score}"
        passed = tier in ("ok", NOT_JUDGED)
        return dg.AssetCheckResult(
            check_name=WITHIN_LIMITS.name,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR
            if tier == "retrain"
            else dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "judged": result.judged,
                "worst_tier": tier,
                "worst_feature": feature,
                "worst_psi": round(psi, 4),
                "drifted_features": dg.MetadataValue.json(result.drifted),
                "score_psi": round(result.score.psi, 4) if result.score else "n/a",
                "psi_warn": settings.psi_warn,
                "psi_retrain": settings.psi_retrain,
                "features": frame_table(feature_table(result)),
                **({"drift_dashboard": dg.MetadataValue.url(day_link)} if day_link else {}),
                **runbook_metadata(WITHIN_LIMITS.name, passed),
            },
        )

    def missing_fields_result(result: DriftResult):
        spikes = result.table.loc[result.missing_spikes]
        table = pd.DataFrame(
            {
                "feature": spikes.index,
                "missing_reference": spikes["missing_reference"].astype(float).round(4),
                "missing_current": spikes["missing_current"].astype(float).round(4),
            }
        )
        if not result.judged:
            description = "not judged: too few rows"
        elif len(spikes):
            description = (
                f"missing rate rose by {settings.missing_spike:.0%} or more in "
                f"{len(spikes)} field(s): {', '.join(spikes.index)}"
            )
        else:
            description = "no missing-field spike"
        return dg.AssetCheckResult(
            check_name=MISSING_FIELDS.name,
            passed=not len(spikes),
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "judged": result.judged,
                "fields": ", ".join(spikes.index) or "none",
                "spikes": frame_table(table),
                "missing_spike": settings.missing_spike,
                **runbook_metadata(MISSING_FIELDS.name, not len(spikes)),
            },
        )

    def performance_result(performance: RealisedPerformance):
        metadata = {
            "judged": performance.judged,
            "matured_rows": performance.rows,
            "cohort_days": (
                f"{performance.days[0]}..{performance.days[-1]}" if performance.days else "none"
            ),
            **runbook_metadata(PERFORMANCE.name, performance.passed),
        }
        if performance.judged:
            metadata |= {
                "roc_auc": round(performance.roc_auc, 4),
                "promised_roc_auc": round(performance.promised_roc_auc, 4),
                "bad_rate_among_approved": round(performance.bad_rate_among_approved, 4),
                "promised_bad_rate": round(performance.promised_bad_rate, 4),
                "max_auc_drop": settings.max_auc_drop,
                "max_bad_rate_rise": settings.max_bad_rate_rise,
            }
        return dg.AssetCheckResult(
            check_name=PERFORMANCE.name,
            passed=performance.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=performance.describe(),
            metadata=metadata,
        )

    return [drift_report]


def log_to_mlflow(
    config: tracking.TrackingConfig,
    dagster_run_id: str,
    day: str,
    champion: Champion,
    result: DriftResult,
    chart: Path,
    report: Path | None,
) -> str:
    """A monitoring run in the experiment: PSI metrics, the summary, chart and report."""
    tags = {
        "lending_monitoring": "drift",
        "partition": day,
        "champion_version": champion.version,
        "worst_tier": result.worst_tier,
        "dagster_run_id": dagster_run_id,
    }
    with tracking.start_run(config, f"drift-{day}", tags) as run:
        import mlflow

        metrics = {f"psi.{name}": float(psi) for name, psi in result.table["psi"].items()}
        if result.score is not None:
            metrics["psi.score"] = result.score.psi
        mlflow.log_metrics(metrics)
        mlflow.log_dict(result.summary(), "drift/summary.json")
        mlflow.log_artifact(str(chart), "drift")
        if report is not None:
            mlflow.log_artifact(str(report), "drift")
        return run.info.run_id
