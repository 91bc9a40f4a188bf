"""Per-applicant data keys, kept outside the audit chain, and the sealing of decision inputs.

A decision entry of the audit log does not hold the applicant's inputs in clear: they are
encrypted (AES-256-GCM) under a random data key of that applicant (the entity key's value, e.g.
the application id), and the entry holds the ciphertext (`sealed`), which the chain's MAC covers.
The data keys live in a key store of their own (a SQLite file, `LENDING_DATA_KEYS`, default
`<data dir>/privacy/data_keys.db`). Destroying an applicant's keys (`erasure`) makes their inputs
unreadable everywhere, backups of the log included, while the chain still verifies
(crypto-shredding). The store remembers which key ids were destroyed, and when, so readers tell
erased inputs from a missing store.

The store must be protected like a secret, and its backups must expire sooner than an erasure
must take effect: a restored backup brings destroyed keys back.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA_KEYS_ENV = "LENDING_DATA_KEYS"
ALGORITHM = "AES-256-GCM"
SEALED = "sealed"
ERASED = "erased"
_AAD = b"lending-audit-inputs/v1"
_TRUNCATE_ATTEMPTS = 30
_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    subject TEXT PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    key BLOB NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS destroyed_keys (
    key_id TEXT PRIMARY KEY,
    destroyed TEXT NOT NULL
);
"""


class DataKeyError(RuntimeError):
    """The key store cannot be opened or read as asked."""


def default_path(data_dir: Path) -> Path:
    named = os.environ.get(DATA_KEYS_ENV)
    return Path(named) if named else data_dir / "privacy" / "data_keys.db"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class DataKeyStore:
    """The key store in one SQLite file (WAL; several processes may use it).

    Deleted keys are overwritten in the file (`secure_delete`) and the write-ahead log is
    truncated after each destruction, so no copy of a destroyed key stays in the store's files.
    """

    def __init__(self, path: Path, read_only: bool = False, checkpoint_every: float | None = None):
        self.path = path
        self._written = threading.Event()
        self._closing = threading.Event()
        self._checkpointer = None
        if read_only:
            if not path.is_file():
                raise DataKeyError(f"no data key store at {path} ({DATA_KEYS_ENV})")
            self._db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            created = not path.exists()
            self._db = sqlite3.connect(
                path, timeout=5, isolation_level=None, check_same_thread=False
            )
            if created:
                os.chmod(path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(_SCHEMA)
            if checkpoint_every:  # copy the WAL from a thread, not in a request's commit
                self._db.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = threading.Thread(
                    target=self._checkpoint, args=(checkpoint_every,), daemon=True
                )
                self._checkpointer.start()
        self._lock = threading.Lock()

    def _checkpoint(self, every: float) -> None:
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        try:
            while not self._closing.wait(every):
                if self._written.is_set():
                    self._written.clear()
                    try:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:  # tried again after the next write
                        self._written.set()
        finally:
            db.close()

    def keys_for(self, subjects: Iterable[str]) -> dict[str, tuple[str, bytes]]:
        """The data key (id, bytes) of each subject, made (and stored) for those without one."""
        wanted = list(dict.fromkeys(subjects))
        made = [(s, secrets.token_hex(16), AESGCM.generate_key(256), _now()) for s in wanted]
        marks = ",".join("?" * len(wanted))
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO data_keys (subject, key_id, key, created) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (subject) DO NOTHING",
                    made,
                )
                rows = db.execute(
                    f"SELECT subject, key_id, key FROM data_keys WHERE subject IN ({marks})", wanted
                ).fetchall()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self._written.set()
        return {subject: (key_id, key) for subject, key_id, key in rows}

    def key(self, key_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT key FROM data_keys WHERE key_id = ?", (key_id,))
            found = row.fetchone()
        return found[0] if found else None

    def destroyed(self, key_id: str) -> str | None:
        """When the key was destroyed, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT destroyed FROM destroyed_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
        return row[0] if row else None

    def key_ids(self, subject: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT key_id FROM data_keys WHERE subject = ?", (subject,))
            return [key_id for (key_id,) in rows.fetchall()]

    def destroy(self, subject: str) -> list[str]:
        """Delete the subject's keys (overwritten in the file) and record their ids as
        destroyed; the ids destroyed (none when the subject has no key)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                ids = [
                    key_id
                    for (key_id,) in db.execute(
                        "SELECT key_id FROM data_keys WHERE subject = ?", (subject,)
                    ).fetchall()
                ]
                db.execute("DELETE FROM data_keys WHERE subject = ?", (subject,))
                db.executemany(
                    "INSERT OR IGNORE INTO destroyed_keys (key_id, destroyed) VALUES (?, ?)",
                    [(key_id, _now()) for key_id in ids],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            for _ in range(_TRUNCATE_ATTEMPTS):  # another process may be copying its log
                busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    break
                time.sleep(0.1)
        if busy:
            raise DataKeyError(
                "the keys were deleted, but the key store's write-ahead log could not be "
                "truncated (a reader held it): run the erasure again to finish"
            )
        return ids

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            self._db.close()


def open_store(
    data_dir: Path, read_only: bool = False, checkpoint_every: float | None = None
) -> DataKeyStore:
    """The key store (`LENDING_DATA_KEYS`, else under the data dir); `checkpoint_every`
    (seconds): copy its write-ahead log into the file from a background thread."""
    return DataKeyStore(default_path(data_dir), read_only, checkpoint_every)


def _aad(request_id: str, key_id: str) -> bytes:
    return b"\n".join((_AAD, request_id.encode(), key_id.encode()))


class Sealer:
    """Replaces `inputs` and `input_hmac` of decision entries by their ciphertext under the
    applicant's data key (one key store transaction per call)."""

    def __init__(self, store: DataKeyStore, subject_field: str):
        self.store = store
        self.subject_field = subject_field

    def __call__(self, entries: list[dict]) -> list[dict]:
        subjects = [self.subject(entry) for entry in entries]
        keys = self.store.keys_for(subjects)
        for entry, subject in zip(entries, subjects, strict=True):
            key_id, key = keys[subject]
            clear = {"input_hmac": entry.pop("input_hmac", None), "inputs": entry.pop("inputs")}
            text = orjson.dumps(clear, option=orjson.OPT_SORT_KEYS)
            nonce = os.urandom(12)
            ciphertext = AESGCM(key).encrypt(nonce, text, _aad(entry["request_id"], key_id))
            entry[SEALED] = {
                "alg": ALGORITHM,
                "key_id": key_id,
                "ciphertext": base64.b64encode(nonce + ciphertext).decode(),
            }
        return entries

    def subject(self, entry: dict) -> str:
        """The applicant: the entity key's value (the request id when it has none)."""
        value = entry["inputs"].get(self.subject_field)
        return str(value) if value not in (None, "") else f"request:{entry['request_id']}"


def unseal(payload: dict, key: bytes) -> dict:
    """`inputs` and `input_hmac` of a sealed decision payload (raises DataKeyError when the
    ciphertext does not match the key, the request id or the key id)."""
    sealed = payload[SEALED]
    blob = base64.b64decode(sealed["ciphertext"])
    try:
        text = AESGCM(key).decrypt(
            blob[:12], blob[12:], _aad(payload["request_id"], sealed["key_id"])
        )
    except InvalidTag:
        raise DataKeyError(
            f"the sealed inputs of request {payload['request_id']} do not open under their key"
        ) from None
    return orjson.loads(text)


class InputsReader:
    """The inputs of decision payloads, for readers of the log (monitoring, `audit decision`).

    `inputs(payload)` gives the inputs dict, or None when they cannot be read: `why(payload)`
    then says `erased` (the data key was destroyed) or that the key is missing.
    """

    def __init__(self, store: DataKeyStore | None):
        self.store = store

    def inputs(self, payload: dict) -> dict | None:
        """The inputs, or None (erased, no key, or a ciphertext that does not open)."""
        try:
            opened = self.open(payload)
        except DataKeyError:
            return None
        return opened["inputs"] if opened else None

    def open(self, payload: dict) -> dict | None:
        if SEALED not in payload:  # written before inputs were sealed
            return {"inputs": payload.get("inputs"), "input_hmac": payload.get("input_hmac")}
        if self.store is None:
            return None
        key = self.store.key(payload[SEALED]["key_id"])
        return unseal(payload, key) if key is not None else None

    def why(self, payload: dict) -> str:
        if SEALED not in payload:
            return "in clear"
        if self.store is None:
            return "unavailable: no data key store"
        key_id = payload[SEALED]["key_id"]
        when = self.store.destroyed(key_id)
        if when:
            return f"{ERASED} (data key destroyed at {when})"
        key = self.store.key(key_id)
        if key is None:
            return "unavailable: the data key is not in the key store"
        try:
            unseal(payload, key)
        except DataKeyError as exc:
            return f"unreadable: {exc}"
        return "readable"

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def open_inputs_reader(data_dir: Path) -> InputsReader:
    """A reader over the key store opened read-only (without one, sealed inputs read as None)."""
    try:
        return InputsReader(open_store(data_dir, read_only=True))
    except (DataKeyError, sqlite3.Error):
        return InputsReader(None)
