"""Tamper-evident audit log: every decision, promotion and rollback, hash-chained.

Each entry holds its position (`seq`), time, kind, a JSON payload, the hash of the entry before it
and its own hash: SHA-256 over the previous hash, time, kind and payload. Editing an entry breaks
its own hash; deleting, inserting or reordering entries breaks a link. `verify` walks the chain
and names the first entry that is wrong and how. (Rewriting the whole tail with fresh hashes is
only caught against a head hash kept elsewhere: `verify` prints the head to record.)

Storage sits behind `AuditStore`: SQLite by default (one file under the data dir; appends
serialised by an immediate transaction, so several server processes can share it) and
PostgreSQL for production (appends serialised by a transaction-scoped advisory lock). An append
that fails raises: callers must not answer a decision they could not audit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import orjson

GENESIS = "0" * 64
AUDIT_URL_ENV = "LENDING_AUDIT_URL"
_LOCK_ID = 7_204_311  # advisory lock serialising appends on PostgreSQL
LOG = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGINT PRIMARY KEY,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL
)
"""


class Entry(NamedTuple):
    """One entry of the log, in the order of the table's columns."""

    seq: int
    time: str
    kind: str
    payload: str
    prev_hash: str
    entry_hash: str

    @property
    def data(self) -> dict:
        return json.loads(self.payload)


def canonical(payload) -> str:
    """Compact JSON with sorted keys (dates as ISO text): the text that is hashed and stored."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()


def chain_hash(prev_hash: str, time: str, kind: str, payload: str) -> str:
    material = "\n".join((prev_hash, time, kind, payload)).encode()
    return hashlib.sha256(material).hexdigest()


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _chain(last_seq: int, last_hash: str, kind: str, payloads: Iterable[dict]) -> list[Entry]:
    """Entries for payloads appended together (they share one time)."""
    entries = []
    time = now()
    for payload in payloads:
        text = canonical(payload)
        entry_hash = chain_hash(last_hash, time, kind, text)
        last_seq += 1
        entries.append(Entry(last_seq, time, kind, text, last_hash, entry_hash))
        last_hash = entry_hash
    return entries


class AuditStore(Protocol):
    def append(self, kind: str, payloads: list[dict]) -> list[Entry]: ...

    def entries(self) -> Iterator[Entry]: ...

    def close(self) -> None: ...


class SqliteAuditStore:
    """The audit log in one SQLite file (WAL; safe for several processes).

    The store remembers the last entry it wrote and links the next one to it in a single
    insert. `seq` is the primary key, so that insert fails if any other writer appended in
    between; then, and on the first append, the last entry is read under the write lock.

    With `checkpoint_every` (seconds), appends never copy the write-ahead log into the database
    themselves (SQLite does so on the commit that finds the log over 4 MB, about 3,600 decisions
    in: a pause in that request); a thread of the store does it instead, on its own connection,
    when entries were appended since its last pass.
    """

    def __init__(self, path: Path, checkpoint_every: float | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._head: tuple[int, str] | None = None
        self._lock = threading.Lock()
        self._appended = threading.Event()
        self._closing = threading.Event()
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

    def _checkpoint(self, db: sqlite3.Connection, every: float) -> None:
        try:
            while not self._closing.wait(every):
                if self._appended.is_set():
                    self._appended.clear()
                    try:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        self.checkpoints += 1
                    except sqlite3.Error as exc:  # tried again after the next append
                        LOG.warning("audit log checkpoint failed: %s", exc)
        finally:
            db.close()

    def append(self, kind: str, payloads: list[dict]) -> list[Entry]:
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
            self._head = (entries[-1].seq, entries[-1].entry_hash)
            self._appended.set()
            return entries

    def _write(self, begin: str, head, kind: str, payloads: list[dict]) -> list[Entry]:
        """One transaction: chain `payloads` to `head()` (seq and hash of the entry to follow)
        and insert them."""
        db = self._db
        db.execute(begin)
        try:
            entries = _chain(*head(), kind, payloads)
            db.executemany("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)", entries)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return entries

    def _last(self) -> tuple[int, str]:
        last = self._db.execute(
            "SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return last or (-1, GENESIS)

    def entries(self) -> Iterator[Entry]:
        for row in self._db.execute("SELECT * FROM audit_log ORDER BY seq"):
            yield Entry(*row)

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        self._db.close()


class PostgresAuditStore:
    """The audit log in a PostgreSQL table (psycopg 3)."""

    def __init__(self, url: str):
        import psycopg

        self._db = psycopg.connect(url, autocommit=False)
        with self._db.transaction():
            self._db.execute(_SCHEMA)

    def append(self, kind: str, payloads: list[dict]) -> list[Entry]:
        with self._db.transaction(), self._db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            cursor.execute("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            last = cursor.fetchone()
            entries = _chain(*(last or (-1, GENESIS)), kind, payloads)
            cursor.executemany("INSERT INTO audit_log VALUES (%s, %s, %s, %s, %s, %s)", entries)
        return entries

    def entries(self) -> Iterator[Entry]:
        with self._db.transaction(), self._db.cursor() as cursor:
            cursor.execute("SELECT * FROM audit_log ORDER BY seq")
            rows = cursor.fetchall()
        for row in rows:
            yield Entry(*row)

    def close(self) -> None:
        self._db.close()


def default_path(data_dir: Path) -> Path:
    return data_dir / "audit" / "audit.db"


def open_store(
    data_dir: Path, url: str | None = None, checkpoint_every: float | None = None
) -> AuditStore:
    """The audit store `LENDING_AUDIT_URL` names (sqlite:///path or postgresql://...), else
    SQLite under the data dir (`checkpoint_every`: see `SqliteAuditStore`)."""
    url = url or os.environ.get(AUDIT_URL_ENV) or ""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresAuditStore(url)
    if url.startswith("sqlite:///"):
        return SqliteAuditStore(Path(url.removeprefix("sqlite:///")), checkpoint_every)
    if url:
        raise ValueError(f"{AUDIT_URL_ENV}: expected sqlite:///path or postgresql://...")
    return SqliteAuditStore(default_path(data_dir), checkpoint_every)


@dataclass(frozen=True)
class Verification:
    entries: int
    head_hash: str
    first_bad: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad is None


def verify(entries: Iterable[Entry]) -> Verification:
    """Walk the chain in `seq` order; report the first edited, deleted, inserted or reordered
    entry by its index (0-based position in the log)."""
    chain = list(entries)
    position = {e.entry_hash: i for i, e in enumerate(chain)}
    expected_prev = GENESIS
    for i, entry in enumerate(chain):
        if chain_hash(entry.prev_hash, entry.time, entry.kind, entry.payload) != entry.entry_hash:
            return Verification(
                len(chain), "", i, f"entry {i} was edited (its hash does not match its content)"
            )
        if entry.prev_hash != expected_prev:
            return Verification(len(chain), "", *_broken_link(chain, i, expected_prev, position))
        expected_prev = entry.entry_hash
    return Verification(len(chain), expected_prev)


def _broken_link(chain: list[Entry], i: int, expected_prev: str, position: dict) -> tuple[int, str]:
    """Which entry is wrong, and how, when entry i does not link to entry i - 1."""
    link = chain[i].prev_hash
    if i >= 2 and link == chain[i - 2].entry_hash:
        return i - 1, f"entry {i - 1} was inserted (entry {i} links past it to entry {i - 2})"
    following = chain[i + 1] if i + 1 < len(chain) else None
    if link not in position and following is not None and following.prev_hash == expected_prev:
        return i, f"entry {i} was inserted (the entry after it links to the one before it)"
    if link in position:
        return i, f"entry {i} is out of order (it belongs after entry {position[link]})"
    return i, f"an entry before entry {i} was deleted (it links to an entry not in the log)"
