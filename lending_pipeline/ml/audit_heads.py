"""Head checkpoints: the audit chain's head, recorded outside the store.

A MAC chain shows edits, but not that its newest entries were deleted, nor a chain rewritten by
someone who holds the key. Both are caught against head checkpoints: one JSON line per checkpoint
(the head entry's seq, MAC and time, when it was written, the MAC of the line before it, and its
own MAC under the audit key), appended to a file (`<data dir>/audit/head_checkpoints.jsonl`, or
`LENDING_AUDIT_CHECKPOINTS`). Lines are chained, so a line taken out of the middle shows; the file
only helps if whoever can rewrite the store cannot rewrite it too: in production it belongs on
another host or an append-only (WORM) object store (docs/audit.md). Not to be confused with
SQLite's WAL checkpoints (`SqliteAuditStore(checkpoint_every=...)`).
"""

from __future__ import annotations

import fcntl
import hmac
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from lending_pipeline.ml import audit

LOG = logging.getLogger(__name__)
_HEAD_TAG = "lending-audit-head/v1"
_FIELDS = ("seq", "entry_mac", "entry_time", "written", "prev")


class CheckpointError(ValueError):
    """The head checkpoint file is damaged, edited or not written under this key."""


@dataclass(frozen=True)
class HeadCheckpoint:
    line: int
    seq: int
    entry_mac: str
    entry_time: str
    written: str
    prev: str
    mac: str


def head_mac(key: bytes, record: dict) -> str:
    return audit.hmac_hex(key)(orjson.dumps([_HEAD_TAG, *(record[name] for name in _FIELDS)]))


def write_checkpoint(path: Path, key: bytes, head: audit.Entry) -> dict:
    """Append the head entry to the checkpoint file (locked, fsync'd; created owner-only). A
    head equal to the last line's is not written twice. Returns the line's record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        last = _last_line(handle, path)
        if last and last["seq"] == head.seq and last["entry_mac"] == head.mac:
            return last
        record = {
            "seq": head.seq,
            "entry_mac": head.mac,
            "entry_time": head.time,
            "written": audit.now(),
            "prev": last["mac"] if last else audit.GENESIS,
        }
        record["mac"] = head_mac(key, record)
        handle.write(audit.canonical(record).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return record


def _last_line(handle, path: Path) -> dict | None:
    """The last line of the file, refusing to extend a file whose end is damaged."""
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return None
    handle.seek(max(0, size - 8192))
    tail = handle.read()
    if not tail.endswith(b"\n"):
        raise CheckpointError(f"{path} ends in an incomplete line: not extended (see the runbook)")
    try:
        record = orjson.loads(tail[:-1].rsplit(b"\n", 1)[-1])
        return {name: record[name] for name in (*_FIELDS, "mac")}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"the last line of {path} is not a head checkpoint") from None


def read_checkpoints(path: Path, key: bytes) -> list[HeadCheckpoint]:
    """Every line of the checkpoint file, each checked for its MAC and its link to the line
    before; the first bad line raises `CheckpointError` naming it."""
    try:
        with path.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)  # no line half-written by a writer
            data = handle.read()
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc.strerror}") from None
    lines = data.split(b"\n")
    if lines[-1]:
        raise CheckpointError(
            f"line {len(lines)} of {path} is incomplete: a write was cut short or the file was cut"
        )
    heads, prev = [], audit.GENESIS
    for number, raw in enumerate(lines[:-1], 1):
        try:
            record = orjson.loads(raw)
            head = HeadCheckpoint(number, **{name: record[name] for name in (*_FIELDS, "mac")})
            well_formed = type(head.seq) is int and all(
                isinstance(getattr(head, name), str) for name in (*_FIELDS[1:], "mac")
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            well_formed = False
        if not well_formed or set(record) != {*_FIELDS, "mac"}:
            raise CheckpointError(f"line {number} of {path} is not a head checkpoint")
        if not hmac.compare_digest(head_mac(key, record), head.mac):
            raise CheckpointError(
                f"line {number} of {path} fails its MAC: it was edited or forged, or the file "
                "was written under another audit key"
            )
        if head.prev != prev:
            raise CheckpointError(
                f"line {number} of {path} does not follow line {number - 1}: a line was "
                "removed, inserted or reordered"
            )
        heads.append(head)
        prev = head.mac
    return heads


class HeadAnchoring:
    """What a store needs for head checkpoints: `checkpoint_head()` and a background thread.

    The store provides `_key`, `_closing` (an Event set on close), `ready()` and `_newest()` (its
    last entry, read from the database, or None); it calls `_plan_heads` first in its
    constructor (it may refuse) and `_start_heads` last.
    """

    def _plan_heads(self, path: Path | None, every: float | None) -> None:
        if every and path is None:
            raise audit.AuditStoreError(
                f"head checkpoints need a file: set {audit.CHECKPOINTS_ENV} or the data dir"
            )
        self.head_checkpoints = path
        self._head_every = every
        self._head_due = threading.Event()
        self._heads = None

    def _start_heads(self) -> None:
        if self._head_every:
            self._heads = threading.Thread(
                target=self._checkpoint_heads,
                args=(self._head_every,),
                name="audit-heads",
                daemon=True,
            )
            self._heads.start()

    def checkpoint_head(self) -> dict | None:
        """Append the store's newest entry to the head checkpoint file (None: empty store).
        Call it after any append that matters (promotion, rollback)."""
        if self.head_checkpoints is None:
            raise audit.AuditStoreError(
                f"no head checkpoint file: set {audit.CHECKPOINTS_ENV} or the data dir"
            )
        head = self._newest()
        if head is None:
            return None
        if not audit.authentic(self._key, head):
            raise audit.AuditStoreError(
                f"the newest audit entry ({head.seq}) fails its MAC: not checkpointed; run "
                "`lending-pipeline audit verify`"
            )
        return write_checkpoint(self.head_checkpoints, self._key, head)

    def _checkpoint_heads(self, every: float) -> None:
        while not self._closing.wait(every):
            self._checkpoint_if_due()

    def _checkpoint_if_due(self) -> None:
        if self._head_due.is_set() and self.ready():  # not ready: tried once it is again
            self._head_due.clear()
            try:
                self.checkpoint_head()
            except Exception as exc:  # tried again on the next pass
                self._head_due.set()
                LOG.warning("audit head checkpoint failed: %s", exc)

    def _stop_heads(self) -> None:
        """Join the thread and record the head once more (called on close)."""
        if self._heads is not None:
            self._heads.join()
            self._checkpoint_if_due()
