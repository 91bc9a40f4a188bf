"""The audit log in one SQLite file (WAL; safe for several processes), and its read-only view."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from lending_pipeline.ml import audit
from lending_pipeline.ml.audit_heads import HeadAnchoring

LOG = logging.getLogger(__name__)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {audit.TABLE} (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_mac TEXT NOT NULL,
    mac TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS {audit.TABLE}_no_update BEFORE UPDATE ON {audit.TABLE}
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS {audit.TABLE}_no_delete BEFORE DELETE ON {audit.TABLE}
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
_INSERT = f"INSERT INTO {audit.TABLE} ({audit.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"


_BY_REQUEST = (
    f"SELECT {audit.COLUMNS} FROM {audit.TABLE} WHERE kind IN ('decision', 'override', 'shadow') "
    "AND json_extract(payload, '$.request_id') = ? ORDER BY seq"
)


class SqliteAuditStore(HeadAnchoring):
    """A writer of the audit log in a SQLite file (created when missing).

    The store remembers the last entry it wrote and links the next one to it in a single
    insert. `seq` is the primary key, so that insert fails if any other writer appended in
    between; then, and on the first append, the last entry is read under the write lock.
    Triggers refuse UPDATE and DELETE (a guard against mistakes: whoever can write the file can
    drop them; the MAC chain and the head checkpoints are what detect that).

    With `checkpoint_every` (seconds), appends never copy the write-ahead log into the database
    themselves (SQLite does so on the commit that finds the log over 4 MB, about 3,600 decisions
    in: a pause in that request); a thread of the store does it instead, on its own connection,
    when entries were appended since its last pass. `head_checkpoint_every`: see `audit_heads`.
    """

    def __init__(
        self,
        path: Path,
        checkpoint_every: float | None = None,
        key: bytes | None = None,
        head_checkpoints: Path | None = None,
        head_checkpoint_every: float | None = None,
    ):
        self._key = audit.audit_key() if key is None else key
        self._plan_heads(head_checkpoints, head_checkpoint_every)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._head: tuple[int, str] | None = None
        self._lock = threading.Lock()
        self._appended = threading.Event()
        self._closing = threading.Event()
        self._open = True
        self.checkpoints = 0
        self._checkpointer = None
        if checkpoint_every:
            checkpoints = sqlite3.connect(
                path, timeout=5, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(
                target=self._checkpoint,
                args=(checkpoints, checkpoint_every),
                name="audit-wal",
                daemon=True,
            )
            self._checkpointer.start()
        self._start_heads()

    def _checkpoint(self, db: sqlite3.Connection, every: float) -> None:
        try:
            while not self._closing.wait(every):
                if self._appended.is_set():
                    self._appended.clear()
                    try:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        self.checkpoints += 1
                    except sqlite3.Error as exc:  # tried again after the next append
                        LOG.warning("audit log WAL checkpoint failed: %s", exc)
        finally:
            db.close()

    def ready(self) -> bool:
        """True while open (SQLite errors surface on each append)."""
        return self._open

    def append(self, kind: str, payloads: list[dict]) -> list[audit.Entry]:
        if not payloads:
            return []
        with self._lock:
            entries = None
            if self._head is not None:
                try:
                    entries = self._write("BEGIN", lambda: self._head, kind, payloads)
                except sqlite3.IntegrityError:  # another writer appended since
                    entries = None
            if entries is None:
                entries = self._write("BEGIN IMMEDIATE", self._last, kind, payloads)
            self._head = (entries[-1].seq, entries[-1].mac)
            self._appended.set()
            self._head_due.set()
            return entries

    def _write(self, begin: str, head, kind: str, payloads: list[dict]) -> list[audit.Entry]:
        """One transaction: chain `payloads` to `head()` (seq and MAC of the entry to follow)
        and insert them. The first entry of a new chain seals old-format rows, if any."""
        db = self._db
        db.execute(begin)
        try:
            last_seq, last_mac = head()
            sealed = []
            if last_seq == -1:
                legacy = _legacy_rows(db)
                if legacy:
                    seal = [audit.legacy_seal(legacy)]
                    sealed = audit.chain(self._key, -1, audit.GENESIS, audit.LEGACY_SEALED, seal)
                    last_seq, last_mac = sealed[-1].seq, sealed[-1].mac
            entries = audit.chain(self._key, last_seq, last_mac, kind, payloads)
            db.executemany(_INSERT, sealed + entries)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return entries

    def _last(self) -> tuple[int, str]:
        last = self._db.execute(
            f"SELECT seq, mac FROM {audit.TABLE} ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return last or (-1, audit.GENESIS)

    def _newest(self) -> audit.Entry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {audit.COLUMNS} FROM {audit.TABLE} ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return audit.Entry(*row) if row else None

    def entries(self):
        for row in self._db.execute(f"SELECT {audit.COLUMNS} FROM {audit.TABLE} ORDER BY seq"):
            yield audit.Entry(*row)

    def request_entries(self, request_id: str) -> list[audit.Entry]:
        """The decision and override entries of one request id, in order."""
        with self._lock:
            rows = self._db.execute(_BY_REQUEST, (request_id,)).fetchall()
        return [audit.Entry(*row) for row in rows]

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        self._stop_heads()
        self._open = False
        self._db.close()


def _legacy_rows(db: sqlite3.Connection) -> list[tuple] | None:
    """The old-format rows (table `audit_log`, seq order), or None without that table."""
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (audit.LEGACY_TABLE,)
    ).fetchone()
    if not found:
        return None
    return db.execute(
        "SELECT seq, time, kind, payload, prev_hash, entry_hash "
        f"FROM {audit.LEGACY_TABLE} ORDER BY seq"
    ).fetchall()


class SqliteReader:
    """A SQLite audit log opened read-only (`mode=ro`): nothing is created, ever."""

    def __init__(self, path: Path):
        self.where = str(path)
        if not path.exists():
            raise audit.AuditStoreError(
                f"no audit log at {path}: check the data dir (--data-dir, LENDING_DATA_DIR) or "
                f"{audit.AUDIT_URL_ENV}"
            )
        if not path.is_file():
            raise audit.AuditStoreError(f"{path} is not a file")
        try:
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            tables = {
                name
                for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.Error as exc:
            raise audit.AuditStoreError(f"{path} cannot be read as an audit log: {exc}") from None
        if audit.TABLE not in tables and audit.LEGACY_TABLE not in tables:
            self._db.close()
            raise audit.AuditStoreError(
                f"{path} holds no audit table ({audit.TABLE}): it is not an audit log, or the "
                "table was dropped"
            )
        self._tables = tables

    def entries(self) -> list[audit.Entry]:
        if audit.TABLE not in self._tables:
            return []
        try:
            rows = self._db.execute(
                f"SELECT {audit.COLUMNS} FROM {audit.TABLE} ORDER BY seq"
            ).fetchall()
        except sqlite3.Error as exc:
            raise audit.AuditStoreError(f"{self.where} cannot be read: {exc}") from None
        return [audit.Entry(*row) for row in rows]

    def request_entries(self, request_id: str) -> list[audit.Entry]:
        """The decision and override entries of one request id, in order."""
        if audit.TABLE not in self._tables:
            return []
        try:
            rows = self._db.execute(_BY_REQUEST, (request_id,)).fetchall()
        except sqlite3.Error as exc:
            raise audit.AuditStoreError(f"{self.where} cannot be read: {exc}") from None
        return [audit.Entry(*row) for row in rows]

    def legacy(self) -> list[tuple] | None:
        try:
            return _legacy_rows(self._db)
        except sqlite3.Error as exc:
            raise audit.AuditStoreError(f"{self.where}: {audit.LEGACY_TABLE}: {exc}") from None

    def close(self) -> None:
        self._db.close()
