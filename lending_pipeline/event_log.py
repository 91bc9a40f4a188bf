"""The embedded profile's Dagster event log: Dagster's SQLite event log, with open connections.

Dagster's `SqliteEventLogStorage` opens and closes a SQLite connection for every read and
write; in WAL mode each close of a database's last connection checkpoints it (fsync), and each
commit syncs the log. A run over many days stores some 35 events per day (materializations,
planned materializations, check evaluations), so that cost grew with the number of days.

This keeps one open connection per database file (the index and the last few runs' shards) per
process, with `synchronous=NORMAL`: a commit reaches the WAL without an fsync, and checkpoints
happen as SQLite schedules them. Consistency is SQLite's; a power loss (not a crash of the
process) can lose the last commits before a checkpoint. The production profile stores events in
PostgreSQL. A batch of events (Dagster sends one when `DAGSTER_EVENT_BATCH_SIZE` is set, which
the package sets: a step's materializations over a range of days, a run's planned events) is
written in one transaction per database. Everything else is Dagster's: the schema, the files
under `base_dir`; a watched run (the UI's live run log) is read again when its shard's
write-ahead log changes, where commits now land.

    event_log_storage:
      module: lending_pipeline.event_log
      class: LocalEventLogStorage
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from dagster import Field, StringSource
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SqliteEventLogStorage,
    SqliteEventLogStorageWatchdog,
)
from sqlalchemy.pool import StaticPool
from watchdog.events import PatternMatchingEventHandler
from watchdog.observers import Observer

OPEN_DATABASES = 8  # the index and the shards of the runs most recently written or read
BUSY_TIMEOUT_S = 30


def _pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class _Watchdog(SqliteEventLogStorageWatchdog):
    """Dagster's watch of a run's shard, woken by its write-ahead log as well."""

    def __init__(self, storage: SqliteEventLogStorage, run_id: str, callback, cursor):
        super().__init__(storage, run_id, callback, cursor)
        path = storage.path_for_shard(run_id)
        PatternMatchingEventHandler.__init__(self, patterns=[path, f"{path}-wal"])

    def on_modified(self, event) -> None:
        self._process_log()


class LocalEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` keeping each database's connection open (see the module)."""

    def __init__(self, base_dir: str | None = None, inst_data=None):
        home = os.environ.get("DAGSTER_HOME", ".")
        self._engines: OrderedDict[str, db.engine.Engine] = OrderedDict()
        self._tables: set[str] = set()
        self._index_cols: bool | None = None
        super().__init__(base_dir or os.path.join(home, "history", "runs"), inst_data)

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> db.engine.Engine:
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = db.create_engine(
                self.conn_string_for_shard(shard),
                poolclass=StaticPool,
                connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
            )
            db.event.listen(engine, "connect", _pragmas)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        while len(self._engines) > OPEN_DATABASES:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.engine.Connection]:
        with self._db_lock, self._engine(shard).connect() as conn, conn.begin():
            yield conn

    def has_table(self, table_name: str) -> bool:
        if table_name not in self._tables and super().has_table(table_name):
            self._tables.add(table_name)
        return table_name in self._tables

    def _has_asset_key_index_cols_on_connection(self, conn) -> bool:
        if self._index_cols is None:
            self._index_cols = super()._has_asset_key_index_cols_on_connection(conn)
        return self._index_cols

    def store_event_batch(self, events) -> None:
        """The events of one run (a step's materializations over a range of days, a run's
        planned events) in one transaction per database, stored as `store_event` stores them.
        The asset table keeps per asset key the last event of each kind, as it would after
        storing them one by one."""
        if len({event.run_id for event in events}) != 1:
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        indexed = ASSET_EVENTS | ASSET_CHECK_EVENTS | set(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)
        mirrored = [
            (event, row)
            for event, row in zip(events, rows, strict=True)
            if event.is_dagster_event and event.dagster_event_type in indexed
        ]
        if not mirrored:
            return
        insert = SqlEventLogStorageTable.insert().returning(
            SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
        )
        with self.index_transaction() as conn:
            ids = conn.execute(insert, [row for _, row in mirrored]).scalars().all()
            assets = [
                (event, event_id)
                for (event, _), event_id in zip(mirrored, ids, strict=True)
                if event.dagster_event_type in ASSET_EVENTS
            ]
            if assets:
                self._store_asset_event_tags(conn, *zip(*assets, strict=True))
            latest = {}  # the last event of each (asset key, kind), in the order of the last
            for event, event_id in assets:
                kind = (event.dagster_event.asset_key, event.dagster_event_type)
                latest.pop(kind, None)
                latest[kind] = (event, event_id)
            for event, event_id in latest.values():
                self._store_asset_event(conn, event, event_id)
        for (event, _), event_id in zip(mirrored, ids, strict=True):
            if event.dagster_event_type in ASSET_CHECK_EVENTS:
                self.store_asset_check_event(event, event_id)

    def _close_all(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def watch(self, run_id: str, cursor: str | None, callback) -> None:
        if not self._obs:
            self._obs = Observer()
            self._obs.start()
        watchdog = _Watchdog(self, run_id, callback, cursor)
        self._watchers[run_id][callback] = (
            watchdog,
            self._obs.schedule(watchdog, self._base_dir, recursive=True),
        )

    def wipe(self) -> None:
        self._close_all()
        self._tables.clear()
        super().wipe()

    def dispose(self) -> None:
        self._close_all()
        super().dispose()
