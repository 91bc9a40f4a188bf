"""Automation: schedules for the daily, monitoring and nightly retraining runs; the drift sensor
that requests a retraining when a day's drift reaches the retrain tier; alerts on failed runs
and failed checks.

Sensors read asset check executions from the instance after the id in their cursor, in id
order, and stop at the first one still in progress (its row exists from when it was planned,
so moving past it would lose its result).
"""

import json
import time

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (  # no public equivalent in 1.13
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

from lending_pipeline.defs.common import product_check
from lending_pipeline.defs.metadata import runbook_url
from lending_pipeline.defs.monitoring import WITHIN_LIMITS
from lending_pipeline.defs.resources import spec_data_dir
from lending_pipeline.ml.alerts import make_alert, send_alert
from lending_pipeline.spec import PipelineSpec

DAILY_SCHEDULE = "daily_ingestion_schedule"
MONITORING_SCHEDULE = "daily_monitoring_schedule"
RETRAINING_SCHEDULE = "nightly_retraining_schedule"
DRIFT_SENSOR = "drift_retraining_sensor"
RUN_FAILURE_SENSOR = "run_failure_alert_sensor"
CHECK_FAILURE_SENSOR = "check_failure_alert_sensor"
TAG_PREFIX = "lending/"
PAGE = 100
PENDING = {AssetCheckExecutionRecordStatus.PLANNED}


def settled_check_records(
    instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey], after_id: int
) -> list[AssetCheckExecutionRecord]:
    """Check executions with an id above `after_id`, oldest first, up to (not including) the
    first one whose run is still going."""
    records = []
    for check_key in check_keys:
        cursor = None
        while True:
            page = instance.event_log_storage.get_asset_check_execution_history(
                check_key, limit=PAGE, cursor=cursor
            )
            newer = [r for r in page if r.id > after_id]
            records += newer
            if len(newer) < PAGE:
                break
            cursor = page[-1].id
    records.sort(key=lambda r: r.id)
    settled = []
    for record in records:
        if record.status in PENDING:
            run = instance.get_run_by_id(record.run_id)
            if run is not None and not run.is_finished:
                break
            continue
        settled.append(record)
    return settled


def _cursor(context: dg.SensorEvaluationContext) -> dict:
    return json.loads(context.cursor) if context.cursor else {}


def retraining_tags(partition: str, evaluation) -> dict[str, str]:
    """Run tags of a drift-triggered retraining (copied into MLflow by `lineage_tags`)."""
    metadata = evaluation.metadata
    drifted = sorted(metadata["drifted_features"].value.items(), key=lambda item: -item[1])
    return {
        f"{TAG_PREFIX}reason": "drift",
        f"{TAG_PREFIX}drift_partition": partition,
        f"{TAG_PREFIX}drift_tier": str(metadata["worst_tier"].value),
        f"{TAG_PREFIX}drift_worst_feature": str(metadata["worst_feature"].value),
        f"{TAG_PREFIX}drift_worst_psi": f"{metadata['worst_psi'].value:.4f}",
        f"{TAG_PREFIX}drifted_features": ",".join(f"{k}={v:.4f}" for k, v in drifted),
    }


def build_drift_sensor(spec: PipelineSpec, job_name: str) -> dg.SensorDefinition:
    """One retraining run per drift event at the retrain tier, at most one per cooldown."""
    cooldown = spec.drift.cooldown_hours * 3600
    within_limits = product_check(spec, WITHIN_LIMITS)

    @dg.sensor(
        name=DRIFT_SENSOR,
        job_name=job_name,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Requests a run of {job_name} when a drift_report partition's "
            f"{WITHIN_LIMITS.name} check fails at the retrain tier (ERROR), at most once per "
            f"{spec.drift.cooldown_hours:g} h (drift.cooldown_hours). Run key: partition + "
            "worst feature; tags lending/reason=drift, the partition and the drifted features."
        ),
    )
    def drift_retraining_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = _cursor(context)
        last_id, last_trigger = state.get("last_id", 0), state.get("last_trigger")
        requests, cooled = [], []
        for record in settled_check_records(context.instance, [within_limits], last_id):
            last_id = record.id
            evaluation = record.event.asset_check_evaluation if record.event else None
            retrain = (
                evaluation is not None
                and not evaluation.passed
                and evaluation.severity == dg.AssetCheckSeverity.ERROR
            )
            if not retrain:
                continue
            tags = retraining_tags(record.partition, evaluation)
            feature = tags[f"{TAG_PREFIX}drift_worst_feature"]
            now = time.time()
            if last_trigger is not None and now - last_trigger < cooldown:
                cooled.append(f"{record.partition} ({feature})")
                continue
            requests.append(dg.RunRequest(run_key=f"drift:{record.partition}:{feature}", tags=tags))
            last_trigger = now
        cursor = json.dumps({"last_id": last_id, "last_trigger": last_trigger})
        if cooled:
            context.log.info(f"drift within the cooldown, no new retraining: {', '.join(cooled)}")
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=cursor)
        reason = (
            f"in cooldown since the last trigger: {', '.join(cooled)}"
            if cooled
            else "no new drift at the retrain tier"
        )
        return dg.SensorResult(skip_reason=reason, cursor=cursor)

    return drift_retraining_sensor


def check_alert(record: AssetCheckExecutionRecord) -> dict | None:
    """An alert for a failed check execution (None when it passed)."""
    evaluation = record.event.asset_check_evaluation if record.event else None
    failed = record.status == AssetCheckExecutionRecordStatus.FAILED
    if evaluation is None and not failed:
        return None
    if evaluation is not None and evaluation.passed:
        return None
    runbook = evaluation.metadata.get("runbook") if evaluation else None
    return make_alert(
        "check_failed",
        (evaluation.description if evaluation else None) or "the check did not complete",
        runbook.value if runbook else runbook_url("alerts").value,
        severity=evaluation.severity.value if evaluation else "ERROR",
        run_id=record.run_id,
        asset=record.key.asset_key.to_user_string(),
        check=record.key.name,
        partition=record.partition,
    )


def build_alert_sensors(spec: PipelineSpec) -> list[dg.SensorDefinition]:
    """Alerts on failed checks and failed runs, into the product's own data dir."""

    @dg.sensor(
        name=CHECK_FAILURE_SENSOR,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Appends an alert to <data dir>/alerts/alerts.jsonl (and POSTs it to "
            "LENDING_ALERT_WEBHOOK_URL when set) for every failed asset check execution."
        ),
    )
    def check_failure_alert_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        state = _cursor(context)
        last_id = state.get("last_id")
        check_keys = list(context.repository_def.asset_graph.asset_check_keys)
        if last_id is None:  # first tick: start from now, like Dagster's run-status sensors
            latest = [
                r.id
                for k in check_keys
                for r in context.instance.event_log_storage.get_asset_check_execution_history(
                    k, limit=1
                )
            ]
            context.update_cursor(json.dumps({"last_id": max(latest, default=0)}))
            return dg.SkipReason("started: alerting on check failures from now on")
        sent = 0
        for record in settled_check_records(context.instance, check_keys, last_id):
            last_id = record.id
            alert = check_alert(record)
            if alert is not None:
                send_alert(spec_data_dir(spec.name), alert, context.log)
                sent += 1
        context.update_cursor(json.dumps({"last_id": last_id}))
        return dg.SkipReason(f"{sent} failed check(s) alerted")

    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Appends an alert to <data dir>/alerts/alerts.jsonl (and POSTs it to "
            "LENDING_ALERT_WEBHOOK_URL when set) for every failed run of this code location."
        ),
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
        steps = []
        for event in context.get_step_failure_events():
            error = event.step_failure_data.error
            first_line = error.message.strip().splitlines()[0][:300] if error else "failed"
            steps.append(f"{event.step_key}: {first_line}")
        message = context.failure_event.message or "the run failed"
        if steps:
            message = f"{message} {' | '.join(steps)}"
        run = context.dagster_run
        alert = make_alert(
            "run_failed",
            message,
            runbook_url("alerts").value,
            run_id=run.run_id,
            job=run.job_name,
            partition=run.tags.get("dagster/partition") or _partition_range(run.tags),
        )
        send_alert(spec_data_dir(spec.name), alert, context.log)

    return [check_failure_alert_sensor, run_failure_alert_sensor]


def _partition_range(tags: dict[str, str]) -> str | None:
    """The days of a run over a range of partitions: `first...last` (one day: that day)."""
    first = tags.get("dagster/asset_partition_range_start")
    last = tags.get("dagster/asset_partition_range_end")
    if not first:
        return None
    return first if first == last else f"{first}...{last}"


def build_schedules(
    spec: PipelineSpec,
    daily,
    monitoring,
    training_job: str,
) -> list:
    """Daily ingestion (00:30 UTC) and monitoring (01:30 UTC) of yesterday's partition, and the
    nightly retraining from `drift.retrain_schedule`; all STOPPED until switched on."""
    retrain = spec.drift.retrain_schedule
    return [
        dg.build_schedule_from_partitioned_job(
            daily,
            name=DAILY_SCHEDULE,
            hour_of_day=0,
            minute_of_hour=30,
            description="Ingest, validate and build the features of yesterday's partition.",
        ),
        dg.build_schedule_from_partitioned_job(
            monitoring,
            name=MONITORING_SCHEDULE,
            hour_of_day=1,
            minute_of_hour=30,
            description="The drift report of yesterday's partition, after its ingestion.",
        ),
        dg.ScheduleDefinition(
            name=RETRAINING_SCHEDULE,
            job_name=training_job,
            cron_schedule=retrain.cron,
            execution_timezone=retrain.timezone,
            tags={f"{TAG_PREFIX}reason": "schedule"},
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description=(
                f"Nightly retraining ({retrain.cron}, {retrain.timezone}; the spec's "
                "drift.retrain_schedule): train, gate, promote only when every gate passes."
            ),
        ),
    ]
