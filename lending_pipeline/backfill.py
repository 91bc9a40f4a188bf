"""Headless runs over many days shown in the Dagster UI as one backfill.

`lending-pipeline materialize` runs the daily job once per day in this process (no daemon, no
run launcher: in-process runs cost milliseconds, a launched run seconds). Each run carries
Dagster's backfill tag; when the last day is done, a backfill record of the daily job's
partition set is written to the instance, so **Overview → Backfills** lists the whole demo as
one backfill with its per-day statuses. The record is written already complete: a running
backfill daemon (`make dev`) never picks it up and never launches its runs a second time.

Dagster has no public API for a backfill whose runs were executed elsewhere; the record uses
its backfill types (`dagster._core.execution.backfill`), checked against Dagster 1.13.
"""

from __future__ import annotations

import time

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemotePartitionSetOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.remote_representation.external_data import (
    partition_set_snap_name_for_job_name,
)
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import make_new_backfill_id

from lending_pipeline.links import REPO_ROOT

CODE_LOCATION = "lending_pipeline"
REPOSITORY = "__repository__"  # the repository Dagster builds from a `Definitions` object

__all__ = ["BACKFILL_ID_TAG", "Backfill"]


class Backfill:
    """One headless backfill: tags for its runs now, its record when `finish` is called."""

    def __init__(self, job_name: str, partitions: list[str], title: str):
        self.id = make_new_backfill_id()
        self.job_name = job_name
        self.partitions = list(partitions)
        self.title = title
        self.started = time.time()

    @property
    def tags(self) -> dict[str, str]:
        return {BACKFILL_ID_TAG: self.id}

    def origin(self) -> RemotePartitionSetOrigin:
        code_location = InProcessCodeLocationOrigin(
            loadable_target_origin=LoadableTargetOrigin(
                module_name="lending_pipeline.definitions", working_directory=str(REPO_ROOT)
            ),
            location_name=CODE_LOCATION,
        )
        return RemotePartitionSetOrigin(
            repository_origin=RemoteRepositoryOrigin(code_location, REPOSITORY),
            partition_set_name=partition_set_snap_name_for_job_name(self.job_name),
        )

    def finish(self, instance: dg.DagsterInstance, failed: int) -> PartitionBackfill:
        """Write the completed backfill (`failed` runs make it COMPLETED_FAILED)."""
        status = BulkActionStatus.COMPLETED_FAILED if failed else BulkActionStatus.COMPLETED_SUCCESS
        record = PartitionBackfill(
            backfill_id=self.id,
            status=status,
            from_failure=False,
            tags={"lending/launched_by": "lending-pipeline materialize"},
            backfill_timestamp=self.started,
            partition_set_origin=self.origin(),
            partition_names=self.partitions,
            last_submitted_partition_name=self.partitions[-1] if self.partitions else None,
            title=self.title,
            backfill_end_timestamp=time.time(),
            failure_count=failed,
        )
        instance.add_backfill(record)
        return record

    def ui_path(self) -> str:
        return f"/runs/b/{self.id}"
