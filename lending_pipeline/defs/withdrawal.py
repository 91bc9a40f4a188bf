"""Withdrawing stale partitions: a day that fails must not keep an earlier run's results.

When a day's ingestion or validation fails, the files its downstream assets wrote in an earlier,
successful run no longer follow from the landing files. They are removed from the warehouse (the
landing files stay; a later successful run writes them again), and an observation on each asset
says so, so the warehouse, the CLI summary and the UI all read that day as failed.
"""

from __future__ import annotations

import dagster as dg

from lending_pipeline.defs.resources import partition_path, resolve_data_dir


def withdraw(
    context: dg.AssetExecutionContext, keys: list[dg.AssetKey], partition: str, reason: str
) -> list[str]:
    """Remove the stored `partition` of each asset in `keys`; return the assets withdrawn."""
    data_dir = resolve_data_dir()
    withdrawn = []
    for key in keys:
        path = partition_path(data_dir, key, partition)
        if not path.exists():
            continue
        path.unlink()
        withdrawn.append(key.to_user_string())
        context.log_event(
            dg.AssetObservation(
                asset_key=key,
                partition=partition,
                description=f"partition {partition} withdrawn: {reason}",
                metadata={"withdrawn": True, "reason": reason},
            )
        )
    if withdrawn:
        context.log.warning(
            f"partition {partition}: withdrew the earlier results of {', '.join(withdrawn)} "
            f"({reason})"
        )
    return withdrawn
