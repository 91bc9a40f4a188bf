"""Resources: where data lives, the pseudonymisation key, and the partitioned Parquet store.

Values come from the environment (`LENDING_DATA_DIR`, `LENDING_PII_KEY`); nothing is created or
read when this module is imported.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import PrivateAttr
from upath import UPath

from lending_pipeline.ml.keyring import Keyring
from lending_pipeline.ml.keyring import load as load_keyring
from lending_pipeline.ml.pii import key_bytes
from lending_pipeline.ml.tracking import TrackingConfig, default_tracking_uri, history_path
from lending_pipeline.products import key_prefix, product_data_dir

DATA_DIR_ENV = "LENDING_DATA_DIR"
# The warehouse as an fsspec URL (s3://bucket/warehouse, gs://..., file:///...); default: the
# folder `warehouse` of the data dir. Every read and write of a partition goes through UPath.
WAREHOUSE_URL_ENV = "LENDING_WAREHOUSE_URL"
PII_KEY_ENV = "LENDING_PII_KEY"
# Asset metadata: downstream steps in the same process get the stored frame from memory.
HAND_OVER_IN_MEMORY = "lending/hand_over_in_memory"
# Input metadata: the step gets a `ByPartition` (one frame per partition of its run), not one
# frame concatenated over the partitions.
BY_PARTITION = "lending/by_partition"


class ByPartition(dict):
    """Partition key -> frame: what a step run over a range of days returns and receives.

    The IO manager stores each partition in its own file and records its own row count, so a
    run over many days leaves exactly what one run per day would have left."""


def resolve_data_dir(value: str | None = None) -> Path:
    """The data dir: an explicit value, else `LENDING_DATA_DIR`, else `data/`."""
    return Path(value or os.environ.get(DATA_DIR_ENV) or "data").resolve()


def spec_data_dir(spec_name: str) -> Path:
    """The data dir of one product: the products file's (`LENDING_PRODUCTS`), else the data dir."""
    return product_data_dir(spec_name) or resolve_data_dir()


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas with Arrow-backed text columns (no per-value Python objects)."""
    text = pd.StringDtype("pyarrow")
    mapping = {pa.string(): text, pa.large_string(): text}
    return table.to_pandas(types_mapper=mapping.get)


def warehouse_root(data_dir: Path) -> UPath:
    """The warehouse: `LENDING_WAREHOUSE_URL`, else `<data dir>/warehouse`."""
    url = os.environ.get(WAREHOUSE_URL_ENV)
    return UPath(url) if url else UPath(data_dir / "warehouse")


def partition_path(data_dir: Path, asset_key: dg.AssetKey, partition: str | None) -> UPath:
    """Where the IO manager stores one partition of an asset (`all` when unpartitioned)."""
    folder = warehouse_root(data_dir).joinpath(*asset_key.path)
    return folder / f"{partition or 'all'}.parquet"


def read_table(path: UPath) -> pa.Table:
    return pq.read_table(path.path, filesystem=path.fs)


def write_frame(frame: pd.DataFrame, path: UPath) -> None:
    """Write a frame to the warehouse (its folder made when needed), whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


@contextmanager
def local_file(path: UPath):
    """A local path holding the file's bytes (the file itself when it is local)."""
    if isinstance(path, Path):
        yield path
        return
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / path.name
        local.write_bytes(path.read_bytes())
        yield local


def _write_table(table: pa.Table, path: UPath) -> None:
    """Write a file under its own temporary name, then move it over `path` (a rename on a
    filesystem; on an object store each object appears whole when written)."""
    tmp = _temporary(path)
    pq.write_table(table, tmp.path, filesystem=tmp.fs)
    path.fs.mv(tmp.path, path.path)


def read_partitions(data_dir: Path, asset_key: dg.AssetKey, partitions: list[str]) -> pd.DataFrame:
    """The stored partitions of an asset that exist, concatenated (empty when none does)."""
    paths = [partition_path(data_dir, asset_key, p) for p in partitions]
    tables = [read_table(path) for path in paths if path.exists()]
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
    """The secret key of the keyed HMAC that pseudonymises PII (from `LENDING_PII_KEY`), or the
    keyring `LENDING_PII_KEYRING` names (`ml.keyring`)."""

    key: str

    def key_bytes(self) -> bytes:
        return key_bytes(self.key)

    def keyring(self) -> Keyring:
        return load_keyring(pii_key=self.key)


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
    key_prefix: list[str] = []  # a product's asset-key prefix, not part of its warehouse paths
    _kept: dict[UPath, tuple[tuple[int, int], pd.DataFrame]] = PrivateAttr(default_factory=dict)

    def _path(self, asset_key: dg.AssetKey, partition: str | None) -> UPath:
        if self.key_prefix and asset_key.path[: len(self.key_prefix)] == self.key_prefix:
            asset_key = dg.AssetKey(asset_key.path[len(self.key_prefix) :])
        return partition_path(resolve_data_dir(self.data_dir), asset_key, partition)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | pa.Table | dict) -> None:
        if isinstance(obj, ByPartition):
            self._handle_by_partition(context, obj)
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self._path(context.asset_key, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, dict):
            path = path.with_suffix(".json")
            tmp = _temporary(path)
            tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), "utf-8")
            path.fs.mv(tmp.path, path.path)
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
            return
        table = self._store(context, obj, path)
        context.add_output_metadata(_table_metadata(table, path))

    def _store(self, context: dg.OutputContext, frame: pd.DataFrame | pa.Table, path: UPath):
        """Write one partition's file (kept in memory too when the asset hands over)."""
        table = (
            frame
            if isinstance(frame, pa.Table)
            else pa.Table.from_pandas(frame, preserve_index=False)
        )
        _write_table(table, path)
        signature = _signature(path)
        hand_over = context.definition_metadata.get(HAND_OVER_IN_MEMORY)
        if isinstance(frame, pd.DataFrame) and hand_over and signature:
            self._kept[path] = (signature, frame)
        return table

    def _handle_by_partition(self, context: dg.OutputContext, frames: ByPartition) -> None:
        """Store each partition of a run over several; each gets its own row count and path."""
        expected = set(context.asset_partition_keys)
        if set(frames) != expected:
            raise dg.Failure(
                description=(
                    f"{context.asset_key.to_user_string()}: the step returned partitions "
                    f"{sorted(frames)} for a run over {sorted(expected)}"
                )
            )
        for partition, frame in frames.items():
            path = self._path(context.asset_key, partition)
            path.parent.mkdir(parents=True, exist_ok=True)
            table = self._store(context, frame, path)
            context.step_context.add_asset_metadata(
                _table_metadata(table, path), asset_key=context.asset_key, partition_key=partition
            )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | dict:
        key = context.asset_key
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        if context.definition_metadata.get(BY_PARTITION):
            return ByPartition((p, self._load(key, [p])) for p in partitions)
        return self._load(key, partitions)

    def _load(self, key: dg.AssetKey, partitions: list[str | None]) -> pd.DataFrame | dict:
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
        tables = [read_table(path) for path in paths if path.exists()]
        return arrow_to_pandas(pa.concat_tables(tables, promote_options="default"))


def _table_metadata(table: pa.Table, path: UPath) -> dict:
    return {
        "dagster/row_count": dg.MetadataValue.int(table.num_rows),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in table.schema])
        ),
        "path": dg.MetadataValue.path(str(path)),
    }


def _temporary(path: UPath) -> UPath:
    """A writer's own temporary file beside `path` (two writers of one partition, e.g. a step
    redelivered while its first attempt still runs, never share one)."""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def _signature(path: UPath) -> tuple[int, int] | None:
    """Modification time and size of a file; None where the store keeps no usable time."""
    stat = path.stat()
    mtime = getattr(stat, "st_mtime_ns", 0)
    return (mtime, stat.st_size) if mtime else None


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking and registry: `MLFLOW_TRACKING_URI`, else SQLite under the data dir."""

    tracking_uri: str = ""
    experiment: str = ""  # default `lending_pipeline`, `lending_pipeline.<product>` for a product
    registered_model: str = ""

    def config(self, spec_name: str) -> TrackingConfig:
        data_dir = spec_data_dir(spec_name)
        experiment = ".".join(["lending_pipeline", *key_prefix(spec_name)])
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        served = uri.startswith(("http://", "https://"))  # a tracking server stores artifacts
        return TrackingConfig(
            tracking_uri=uri or default_tracking_uri(data_dir),
            experiment=self.experiment or experiment,
            artifact_location="" if served else (data_dir / "mlflow" / "artifacts").as_uri(),
            registered_model=self.registered_model or f"{spec_name}_pd",
        )

    def history_path(self, spec_name: str = "") -> Path:
        return history_path(spec_data_dir(spec_name))
