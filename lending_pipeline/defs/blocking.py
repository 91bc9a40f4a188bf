"""Blocking across runs.

Dagster's `blocking=True` stops downstream steps in the same run only. A later run that selects
just a downstream asset would build on data whose validation failed. Every downstream asset
calls `require_passed_checks` first: it refuses a partition whose latest execution of any
blocking upstream check failed, naming the check.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter  # no public equivalent in 1.13
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from lending_pipeline.defs.metadata import runbook_metadata


def failed_checks(
    instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey], partition: str | None
) -> list[str]:
    """Names of the checks whose latest execution for `partition` failed."""
    failed = []
    for check_key in check_keys:
        history = instance.event_log_storage.get_asset_check_execution_history(
            check_key,
            limit=1,
            status={
                AssetCheckExecutionRecordStatus.SUCCEEDED,
                AssetCheckExecutionRecordStatus.FAILED,
            },
            partition_filter=PartitionKeyFilter(key=partition) if partition else None,
        )
        if history and history[0].status == AssetCheckExecutionRecordStatus.FAILED:
            failed.append(check_key.name)
    return failed


def require_passed_checks(
    context: dg.AssetExecutionContext, check_keys: list[dg.AssetCheckKey]
) -> None:
    """Raise a Failure if any blocking upstream check failed on this partition."""
    partition = context.partition_key if context.has_partition_key else None
    failed = failed_checks(context.instance, check_keys, partition)
    if failed:
        where = f"partition {partition}" if partition else "the upstream data"
        raise dg.Failure(
            description=(
                f"refusing to build {context.asset_key.to_user_string()} on {where}: the latest "
                f"run of blocking check(s) {', '.join(failed)} failed. Fix the data and "
                "re-materialize the upstream asset with its checks first."
            ),
            metadata={
                "failed_checks": ", ".join(failed),
                "partition": partition or "",
                **runbook_metadata("blocked_by_failed_check"),
            },
        )


def failed_partitions(
    instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey], partitions: list[str]
) -> dict[str, list[str]]:
    """For many partitions at once: partition -> names of checks whose latest execution failed."""
    final = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
    failed: dict[str, list[str]] = {}
    infos = instance.event_log_storage.get_asset_check_partition_info(
        check_keys, partition_keys=partitions
    )
    for info in infos:
        status = info.latest_execution_status
        partition = info.partition_key
        if status not in final:  # planned or skipped last time: look at the last real result
            names = failed_checks(instance, [info.check_key], partition)
            status = AssetCheckExecutionRecordStatus.FAILED if names else status
        if status == AssetCheckExecutionRecordStatus.FAILED:
            failed.setdefault(partition, []).append(info.check_key.name)
    return failed


def require_passed_partitions(
    context: dg.AssetExecutionContext, check_keys: list[dg.AssetCheckKey], partitions: list[str]
) -> None:
    """Raise a Failure naming the partitions (and checks) whose blocking checks failed."""
    failed = failed_partitions(context.instance, check_keys, partitions)
    if failed:
        shown = "; ".join(f"{p}: {', '.join(sorted(c))}" for p, c in sorted(failed.items())[:5])
        raise dg.Failure(
            description=(
                f"refusing to build {context.asset_key.to_user_string()}: {len(failed)} input "
                f"partition(s) failed blocking checks ({shown}). Fix the data of those "
                "partitions and re-materialize them with their checks first."
            ),
            metadata={
                "failed_partitions": ", ".join(sorted(failed)),
                **runbook_metadata("blocked_by_failed_check"),
            },
        )
