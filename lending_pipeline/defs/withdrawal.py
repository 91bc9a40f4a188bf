"""Withdrawing stale partitions: a day that fails must not keep an earlier run's results.

When a day's ingestion or validation fails, the files its downstream assets wrote in an earlier,
successful run no longer follow from the landing files. They are removed from the warehouse (the
landing files stay; a later successful run writes them again), and an observation on each asset
says so, so the warehouse, the CLI summary and the UI all read that day as failed.
"""

from __future__ import annotations

import dagster as dg

from lending_pipeline.defs.common import product_key
from lending_pipeline.defs.resources import partition_path, spec_data_dir
from lending_pipeline.spec import PipelineSpec


def withdraw(
    context: dg.AssetExecutionContext,
    spec: PipelineSpec,
    keys: list[dg.AssetKey],
    partition: str,
    reason: str,
) -> list[str]:
    """Remove the stored `partition` of each asset in `keys` (bare keys of the spec's product);
    return the assets withdrawn."""
    data_dir = spec_data_dir(spec.name)
    withdrawn = []
    for key in keys:
        path = partition_path(data_dir, key, partition)
        if not path.exists():
            continue
        path.unlink()
        withdrawn.append(key.to_user_string())
        context.log_event(
            dg.AssetObservation(
                asset_key=product_key(spec, key),
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
