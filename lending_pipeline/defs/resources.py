"""Resources: where data lives, the pseudonymisation key, and the partitioned Parquet store.

Values come from the environment (`LENDING_DATA_DIR`, `LENDING_PII_KEY`); nothing is created or
read when this module is imported.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import PrivateAttr

from lending_pipeline.ml.pii import key_bytes
from lending_pipeline.ml.tracking import TrackingConfig, default_tracking_uri, history_path

DATA_DIR_ENV = "LENDING_DATA_DIR"
PII_KEY_ENV = "LENDING_PII_KEY"
# Asset metadata: downstream steps in the same process get the stored frame from memory.
HAND_OVER_IN_MEMORY = "lending/hand_over_in_memory"


def resolve_data_dir(value: str | None = None) -> Path:
    """The data dir: an explicit value, else `LENDING_DATA_DIR`, else `data/`."""
    return Path(value or os.environ.get(DATA_DIR_ENV) or "data").resolve()


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas with Arrow-backed text columns (no per-value Python objects)."""
    text = pd.StringDtype("pyarrow")
    mapping = {pa.string(): text, pa.large_string(): text}
    return table.to_pandas(types_mapper=mapping.get)


def partition_path(data_dir: Path, asset_key: dg.AssetKey, partition: str | None) -> Path:
    """Where the IO manager stores one partition of an asset (`all` when unpartitioned)."""
    folder = data_dir / "warehouse" / "/".join(asset_key.path)
    return folder / f"{partition or 'all'}.parquet"


def read_partitions(data_dir: Path, asset_key: dg.AssetKey, partitions: list[str]) -> pd.DataFrame:
    """The stored partitions of an asset that exist, concatenated (empty when none does)."""
    paths = [partition_path(data_dir, asset_key, p) for p in partitions]
    tables = [pq.read_table(path) for path in paths if path.exists()]
    if not tables:
        return pd.DataFrame()
    return arrow_to_pandas(pa.concat_tables(tables, promote_options="default"))


class LakeStorage(dg.ConfigurableResource):
    """The data dir: landing files (as received) and the warehouse (one file per partition)."""

    data_dir: str = ""

    @property
    def path(self) -> Path:
        return resolve_data_dir(self.data_dir)


class PiiKey(dg.ConfigurableResource):
    """The secret key of the keyed HMAC that pseudonymises PII (from `LENDING_PII_KEY`)."""

    key: str

    def key_bytes(self) -> bytes:
        return key_bytes(self.key)


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """Stores each asset partition as `<data dir>/warehouse/<asset>/<partition>.parquet`.

    A write replaces exactly one partition file, atomically; no other file is touched. Loading
    several partitions (an unpartitioned asset reading a partitioned one) concatenates them.

    An asset whose metadata sets `HAND_OVER_IN_MEMORY` is still written, and the frame it
    returned is also kept: a step of the same run and process that loads it while the file is
    unchanged gets that frame instead of reading the file back (consumers must not modify it).
    Other processes, and later runs, read the file.
    """

    data_dir: str = ""
    _kept: dict[Path, tuple[tuple[int, int], pd.DataFrame]] = PrivateAttr(default_factory=dict)

    def _path(self, asset_key: dg.AssetKey, partition: str | None) -> Path:
        return partition_path(resolve_data_dir(self.data_dir), asset_key, partition)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | pa.Table | dict) -> None:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self._path(context.asset_key, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, dict):
            path = path.with_suffix(".json")
            tmp = _temporary(path)
            tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), "utf-8")
            tmp.replace(path)
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
            return
        table = (
            obj if isinstance(obj, pa.Table) else pa.Table.from_pandas(obj, preserve_index=False)
        )
        tmp = _temporary(path)
        pq.write_table(table, tmp)
        tmp.replace(path)
        if isinstance(obj, pd.DataFrame) and context.definition_metadata.get(HAND_OVER_IN_MEMORY):
            self._kept[path] = (_signature(path), obj)
        context.add_output_metadata(
            {"rows": table.num_rows, "path": dg.MetadataValue.path(str(path))}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | dict:
        key = context.asset_key
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        document = self._path(key, None).with_suffix(".json")
        if partitions == [None] and document.exists():
            return json.loads(document.read_text("utf-8"))
        paths = [self._path(key, p) for p in partitions]
        kept = self._kept.get(paths[0]) if len(paths) == 1 else None
        if kept and paths[0].exists() and kept[0] == _signature(paths[0]):
            return kept[1]
        missing = [p for p, path in zip(partitions, paths, strict=True) if not path.exists()]
        if missing and len(paths) == 1:
            raise dg.Failure(
                description=(
                    f"asset {key.to_user_string()} has no stored partition {missing[0]}: "
                    "materialize it first"
                )
            )
        tables = [pq.read_table(path) for path in paths if path.exists()]
        return arrow_to_pandas(pa.concat_tables(tables, promote_options="default"))


def _temporary(path: Path) -> Path:
    """A writer's own temporary file beside `path` (two writers of one partition, e.g. a step
    redelivered while its first attempt still runs, never share one)."""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking and registry: `MLFLOW_TRACKING_URI`, else SQLite under the data dir."""

    tracking_uri: str = ""
    experiment: str = "lending_pipeline"
    registered_model: str = ""

    def config(self, spec_name: str) -> TrackingConfig:
        data_dir = resolve_data_dir()
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        served = uri.startswith(("http://", "https://"))  # a tracking server stores artifacts
        return TrackingConfig(
            tracking_uri=uri or default_tracking_uri(data_dir),
            experiment=self.experiment,
            artifact_location="" if served else (data_dir / "mlflow" / "artifacts").as_uri(),
            registered_model=self.registered_model or f"{spec_name}_pd",
        )

    def history_path(self) -> Path:
        return history_path(resolve_data_dir())
