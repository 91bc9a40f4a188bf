"""Helpers for tests that run the Dagster job on a real instance."""

import pyarrow.parquet as pq

from lending_pipeline.definitions import DAILY_JOB, build_definitions
from lending_pipeline.defs.common import FEATURES
from lending_pipeline.runs import PartitionRun, run_partition


def run_day(spec, instance, partition: str) -> PartitionRun:
    return run_partition(build_definitions(spec), instance, partition)


def run_selection(spec, instance, partition: str, keys):
    """Run only some assets of the daily job (as a user selecting them in the UI would)."""
    job = build_definitions(spec).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(
        partition_key=partition, instance=instance, asset_selection=keys, raise_on_error=False
    )


def stored_rows(data_dir, asset: str, partition: str) -> int | None:
    path = data_dir / "warehouse" / asset / f"{partition}.parquet"
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else None


def features_materialized(instance, partition: str) -> bool:
    records = instance.fetch_materializations(FEATURES, limit=100).records
    return any(r.partition_key == partition for r in records)


def landing_rows(path) -> int:
    return sum(1 for line in path.read_bytes().split(b"\n")[1:] if line.strip())
