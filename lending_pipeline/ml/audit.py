"""Tamper-evident audit log: every decision, promotion and rollback, chained by a keyed MAC.

Each entry holds its position (`seq`), time, kind, a JSON payload, the MAC of the entry before it
(`prev_mac`) and its own `mac`: HMAC-SHA256 under the audit key over all five other fields. The
key comes from `LENDING_AUDIT_KEY` (hex or text) or the file named by `LENDING_AUDIT_KEY_FILE`,
separate from the pseudonymisation key. Without the key nobody can edit, insert, delete, renumber
or reorder entries unnoticed: `verify` names the first bad position and what happened there.

What a MAC chain alone cannot show (the newest entries deleted, or the chain rewritten by someone
who holds the key) is caught against head checkpoints: the chain head, itself MAC'd, appended to a
file kept outside the store (`audit_heads`) at a fixed interval by the scoring service and on every
promotion and rollback (`store.checkpoint_head()`).

Stores: SQLite by default (`audit_sqlite`), PostgreSQL for production (`audit_pg`). An append that
fails raises: callers must not answer a decision they could not audit. `open_store` opens a writer
(it needs the key); `open_reader` and `verify_store` open read-only and never create anything.
Entries live in the table `audit_log_v2`; `audit_log` is the old unkeyed format (a plain SHA-256
chain), sealed by the first entry of the keyed chain (kind `legacy_sealed`) and checked against it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import orjson

from lending_pipeline.ml.pii import Pseudonymiser
from lending_pipeline.products import product_of_data_dir

GENESIS = "0" * 64
AUDIT_URL_ENV = "LENDING_AUDIT_URL"
AUDIT_KEY_ENV = "LENDING_AUDIT_KEY"
AUDIT_KEY_FILE_ENV = "LENDING_AUDIT_KEY_FILE"
CHECKPOINTS_ENV = "LENDING_AUDIT_CHECKPOINTS"
PII_KEY_ENV = "LENDING_PII_KEY"
KEYRING_ENV = "LENDING_PII_KEYRING"
MIN_KEY_BYTES = 16
TABLE = "audit_log_v2"
LEGACY_TABLE = "audit_log"
LEGACY_SEALED = "legacy_sealed"
COLUMNS = "seq, time, kind, payload, prev_mac, mac"
_ENTRY_TAG = "lending-audit-entry/v2"
_RENUMBER_SEARCH = 100_000  # seqs tried to explain an entry moved by a renumbering

# what `verify` found (`Verification.finding`)
EDITED, DELETED, INSERTED, REORDERED = "edited", "deleted", "inserted", "reordered"
TRUNCATED, REWRITTEN, KEY_MISMATCH, EMPTY = "truncated", "rewritten", "key_mismatch", "empty"
CHECKPOINTS, LEGACY = "checkpoints", "legacy"


class AuditKeyError(ValueError):
    """The audit key is missing, unreadable or unfit."""


class AuditStoreError(RuntimeError):
    """The audit store cannot be opened or checked as asked (missing, empty, unreadable, not set
    up); the message says what is missing."""


class AuditUnavailable(RuntimeError):
    """An append failed because the store cannot be written now (nothing was written)."""


class Entry(NamedTuple):
    """One entry of the log, in the order of the table's columns."""

    seq: int
    time: str
    kind: str
    payload: str
    prev_mac: str
    mac: str

    @property
    def data(self) -> dict:
        return json.loads(self.payload)


class AuditStore(Protocol):
    def append(self, kind: str, payloads: list[dict]) -> list[Entry]: ...

    def entries(self) -> Iterator[Entry]: ...

    def checkpoint_head(self): ...

    def ready(self) -> bool: ...

    def close(self) -> None: ...


def audit_key(environ=None) -> bytes:
    """The audit key from `LENDING_AUDIT_KEY`, else the file `LENDING_AUDIT_KEY_FILE` names.

    Text of hex digits (an even number, 32 or more) is read as hex, anything else as UTF-8 text;
    either way at least 16 bytes, and not the pseudonymisation key. Errors never show the key.
    """
    env = os.environ if environ is None else environ
    text, source = env.get(AUDIT_KEY_ENV), AUDIT_KEY_ENV
    if not text and env.get(AUDIT_KEY_FILE_ENV):
        path = Path(env[AUDIT_KEY_FILE_ENV])
        source = f"{AUDIT_KEY_FILE_ENV} ({path})"
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise AuditKeyError(f"{source} cannot be read: {reason}") from None
        if not text:
            raise AuditKeyError(f"{source} is empty")
    if not text:
        raise AuditKeyError(
            f"no audit key: set {AUDIT_KEY_ENV} (hex or text, at least {MIN_KEY_BYTES} bytes) or "
            f"{AUDIT_KEY_FILE_ENV} (a file holding it); `make` creates a local one in "
            f".secrets/audit_key. Use a key separate from {PII_KEY_ENV}."
        )
    key = _key_bytes(text)
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(f"the audit key from {source} is shorter than {MIN_KEY_BYTES} bytes")
    pii = env.get(PII_KEY_ENV)
    if pii and _key_bytes(pii) == key:
        raise AuditKeyError(
            f"the audit key from {source} is the same as {PII_KEY_ENV}: use a separate key"
        )
    if env.get(KEYRING_ENV) and key in _keyring_secrets(env):
        raise AuditKeyError(
            f"the audit key from {source} is one of the pseudonymisation keys of "
            f"{KEYRING_ENV}: use a separate key"
        )
    return key


def _keyring_secrets(env) -> set[bytes]:
    """The secrets of the pseudonymisation keyring (none when it cannot be read: its own
    loading names the problem)."""
    from lending_pipeline.ml import keyring

    try:
        ring = keyring.from_file(Path(env[KEYRING_ENV]), env)
    except keyring.PiiKeyError:
        return set()
    return {key.secret for key in ring.keys}


def _key_bytes(text: str) -> bytes:
    if re.fullmatch(r"(?:[0-9a-fA-F]{2}){16,}", text):
        return bytes.fromhex(text)
    return text.encode("utf-8")


def canonical(payload) -> str:
    """Compact JSON with sorted keys (dates as ISO text): the text that is MAC'd and stored."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@functools.lru_cache(maxsize=8)
def hmac_hex(key: bytes):
    """HMAC-SHA256 under `key` as a function of bytes to hex (its pads derived once per key)."""
    return Pseudonymiser(key).digest


def entry_mac(key: bytes, seq: int, time: str, kind: str, payload: str, prev_mac: str) -> str:
    """HMAC-SHA256 of every stored field of an entry but its own MAC (as a JSON array: no two
    different field lists give the same bytes)."""
    return hmac_hex(key)(orjson.dumps([_ENTRY_TAG, seq, time, kind, payload, prev_mac]))


def authentic(key: bytes, entry: Entry) -> bool:
    """Whether the entry's MAC matches its fields (False for fields of the wrong type)."""
    seq = entry.seq
    if type(seq) is not int or not all(isinstance(f, str) for f in entry[1:]):
        return False
    try:
        expected = entry_mac(key, seq, entry.time, entry.kind, entry.payload, entry.prev_mac)
    except orjson.JSONEncodeError:  # e.g. a seq beyond 64 bits
        return False
    return hmac.compare_digest(expected, entry.mac)


def chain(
    key: bytes, last_seq: int, last_mac: str, kind: str, payloads: Iterable[dict]
) -> list[Entry]:
    """Entries for payloads appended together after (last_seq, last_mac); they share one time."""
    entries = []
    time = now()
    for payload in payloads:
        text = canonical(payload)
        last_seq += 1
        mac = entry_mac(key, last_seq, time, kind, text, last_mac)
        entries.append(Entry(last_seq, time, kind, text, last_mac, mac))
        last_mac = mac
    return entries


def legacy_hash(prev_hash: str, time: str, kind: str, payload: str) -> str:
    """The old unkeyed format's entry hash (table `audit_log`)."""
    return hashlib.sha256("\n".join((prev_hash, time, kind, payload)).encode()).hexdigest()


def legacy_seal(rows: list[tuple]) -> dict:
    """The payload of the `legacy_sealed` entry for the old-format rows (seq order)."""
    return {
        "table": LEGACY_TABLE,
        "entries": len(rows),
        "last_seq": rows[-1][0],
        "head_hash": rows[-1][5],
        "format": "plain SHA-256 chain, unkeyed",
    }


def default_path(data_dir: Path) -> Path:
    return data_dir / "audit" / "audit.db"


def decision_of_record(key: bytes, entries: list[Entry], inputs=None) -> dict | None:
    """What the log says was decided for one request: its decision entry and every override of
    it, each checked against its MAC; the decision of record is the latest override's, else the
    decision's (with what the challenger would have decided, scored in the shadow). None when
    the request id has no decision entry. With `inputs` (a function of the decision's payload),
    the result also holds what it returns under `inputs` (the opened inputs, or why they cannot
    be read, e.g. erased)."""
    for entry in entries:
        if not authentic(key, entry):
            raise AuditStoreError(
                f"audit entry {entry.seq} fails its MAC: run `lending-pipeline audit verify`"
            )
    decisions = [e for e in entries if e.kind == "decision"]
    if not decisions:
        return None
    original = decisions[0].data
    overrides = [
        {
            "seq": e.seq,
            "time": e.time,
            "decision": e.data["decision"],
            "caller": e.data["caller"],
            "reason": e.data["reason"],
        }
        for e in entries
        if e.kind == "override"
    ]
    found = {
        "request_id": original["request_id"],
        "decision": overrides[-1]["decision"] if overrides else original["decision"],
        "decided_by": overrides[-1]["caller"] if overrides else "model",
        "model_decision": original["decision"],
        "model": original["model"],
        "decision_seq": decisions[0].seq,
        "decision_time": decisions[0].time,
        "overrides": overrides,
        "pii_key": original.get("pii_key"),
        "shadow": [
            {
                "model": e.data["model"],
                "decision": e.data["decision"],
                "probability_of_default": e.data["probability_of_default"],
            }
            for e in entries
            if e.kind == "shadow"
        ],
    }
    if inputs is not None:
        found["inputs"] = inputs(original)
    return found


def checkpoints_path(data_dir: Path | None) -> Path | None:
    """Where head checkpoints go: `LENDING_AUDIT_CHECKPOINTS`, else next to the default store
    (`<data dir>/audit/head_checkpoints.jsonl`); None without either."""
    named = os.environ.get(CHECKPOINTS_ENV)
    if named and product_of_data_dir(data_dir) is None:
        return Path(named)
    return data_dir / "audit" / "head_checkpoints.jsonl" if data_dir is not None else None


def configured_url(data_dir: Path | None, url: str | None = None) -> str:
    """The store's URL: `url`, else a product's own (`audit_url` in the products file, else
    its SQLite store: products never share a chain), else `LENDING_AUDIT_URL`; "" for SQLite
    under the data dir."""
    if url:
        return url
    product = product_of_data_dir(data_dir)
    return product.audit_url if product else os.environ.get(AUDIT_URL_ENV, "")


def _store_url(url: str | None, data_dir: Path | None = None) -> str:
    url = configured_url(data_dir, url)
    if url and not url.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ValueError(f"{AUDIT_URL_ENV}: expected sqlite:///path or postgresql://...")
    return url


def open_store(
    data_dir: Path | None,
    url: str | None = None,
    checkpoint_every: float | None = None,
    head_checkpoint_every: float | None = None,
    key: bytes | None = None,
) -> AuditStore:
    """A writer for the store `LENDING_AUDIT_URL` names (sqlite:///path or postgresql://...),
    else SQLite under the data dir. It needs the audit key (`key`, else from the environment).

    `checkpoint_every` (seconds, SQLite only): copy the write-ahead log into the database from a
    background thread. `head_checkpoint_every` (seconds): append the chain head to the head
    checkpoint file (`checkpoints_path`) from a background thread when entries were appended.
    """
    url = _store_url(url, data_dir)
    key = audit_key() if key is None else key
    heads = checkpoints_path(data_dir)
    if url.startswith(("postgresql://", "postgres://")):
        from lending_pipeline.ml.audit_pg import PostgresAuditStore

        return PostgresAuditStore(url, key, heads, head_checkpoint_every)
    from lending_pipeline.ml.audit_sqlite import SqliteAuditStore

    path = Path(url.removeprefix("sqlite:///")) if url else default_path(data_dir)
    return SqliteAuditStore(path, checkpoint_every, key, heads, head_checkpoint_every)


def open_reader(data_dir: Path | None, url: str | None = None):
    """The store opened read-only (`entries()`, `legacy()`, `close()`, `where`): it never
    creates a file or table; a missing or unreadable store raises `AuditStoreError`."""
    url = _store_url(url, data_dir)
    if url.startswith(("postgresql://", "postgres://")):
        from lending_pipeline.ml.audit_pg import PostgresReader

        return PostgresReader(url)
    from lending_pipeline.ml.audit_sqlite import SqliteReader

    if not url and data_dir is None:
        raise AuditStoreError(f"no audit store given: set {AUDIT_URL_ENV} or the data dir")
    return SqliteReader(Path(url.removeprefix("sqlite:///")) if url else default_path(data_dir))


@dataclass(frozen=True)
class Verification:
    """What `verify` found: `ok`, or the first bad position (0-based, in seq order), the kind of
    finding (EDITED, DELETED, ...) and a sentence saying what is wrong."""

    entries: int
    head_mac: str = ""
    first_bad: int | None = None
    problem: str | None = None
    finding: str | None = None
    checkpoints: int = 0
    anchored_to: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def unanchored(self) -> int:
        """Entries newer than the newest head checkpoint (their deletion would go unnoticed)."""
        return self.entries - 1 - (-1 if self.anchored_to is None else self.anchored_to)


def verify(entries: Iterable[Entry], key: bytes | None = None, checkpoints=None) -> Verification:
    """Walk the chain in `seq` order and name the first edited, deleted, inserted or reordered
    entry; then compare it with the head checkpoints (`audit_heads.read_checkpoints`), when
    given, for the newest entries deleted and a chain rewritten with the key."""
    key = audit_key() if key is None else key
    log = list(entries)
    heads = list(checkpoints or ())
    if not log:
        if heads:
            return _against_checkpoints(log, heads)
        return Verification(0, first_bad=0, problem="the audit log is empty", finding=EMPTY)
    valid = [authentic(key, e) for e in log]
    if len(log) >= 2 and not any(valid):
        problem = (
            "no entry's MAC matches the audit key given: the log was written under another "
            "key (check LENDING_AUDIT_KEY / LENDING_AUDIT_KEY_FILE), or every entry was forged"
        )
        return Verification(len(log), first_bad=0, problem=problem, finding=KEY_MISMATCH)
    expected = GENESIS
    for i, entry in enumerate(log):
        if not (valid[i] and entry.seq == i and entry.prev_mac == expected):
            first_bad, finding, problem = _diagnose(key, log, valid, i)
            return Verification(len(log), "", first_bad, problem, finding)
        expected = entry.mac
    if heads:
        return _against_checkpoints(log, heads)
    return Verification(len(log), expected)


def _diagnose(key: bytes, log: list[Entry], valid: list[bool], i: int) -> tuple[int, str, str]:
    """The first bad position, the kind of finding and the sentence, for entry i (the first that
    is not authentic, not at its seq, or not linked to entry i - 1)."""
    entry = log[i]
    expected = log[i - 1].mac if i else GENESIS
    following = log[i + 1] if i + 1 < len(log) else None
    position = {e.mac: p for p, e in enumerate(log)}
    seq = entry.seq if type(entry.seq) is int else None
    if valid[i]:
        if seq is not None and seq > i:
            gone = f"entry {i} was" if seq == i + 1 else f"entries {i} to {seq - 1} were"
            after = f"entry {i - 1}" if i else "the start"
            return i, DELETED, f"{gone} deleted (the log goes from {after} to entry {seq})"
        if seq is not None and seq < i:
            return i, REORDERED, f"entry {i} is out of order (it was written as entry {seq})"
        return (
            max(i - 1, 0),
            INSERTED,
            f"entry {max(i - 1, 0)} does not belong here (entry {i} was written after another "
            "entry): an entry was replaced or spliced in",
        )
    written = _written_as(key, log, i, position)
    if written is not None:
        before = position.get(entry.prev_mac)
        if before is not None and before != i - 1:
            return i, REORDERED, f"entry {i} is out of order (it was written as entry {written})"
        if written > i:
            gone = f"entry {i} was" if written == i + 1 else f"entries {i} to {written - 1} were"
            return i, DELETED, f"{gone} deleted and the later entries renumbered to hide it"
        return i, REORDERED, f"entry {i} was renumbered (it was written as entry {written})"
    if following is not None and following.prev_mac == expected:
        link = f"entry {i - 1}" if i else "the start"
        return i, INSERTED, f"entry {i} was inserted (the entry after it links to {link})"
    return i, EDITED, f"entry {i} was edited or forged (its MAC does not match its content)"


def _written_as(key: bytes, log: list[Entry], i: int, position: dict) -> int | None:
    """The seq under which entry i's MAC verifies when it is not its stored one (an entry moved
    by a renumbering), or None (its content was changed)."""
    entry = log[i]
    if not all(isinstance(f, str) for f in entry[1:]):
        return None
    candidates = [0] if entry.prev_mac == GENESIS else []
    before = position.get(entry.prev_mac)
    if before is not None:
        candidates += [before + 1]
        if type(log[before].seq) is int:
            candidates.append(log[before].seq + 1)
    candidates += range(max(0, i - 64), i + 65)
    if before is None:  # its predecessor is gone: entries before it were deleted
        candidates += range(i + 65, i + _RENUMBER_SEARCH)
    for seq in dict.fromkeys(candidates):
        if seq != entry.seq and authentic(key, entry._replace(seq=seq)):
            return seq
    return None


def _against_checkpoints(log: list[Entry], heads: list) -> Verification:
    """Compare an intact chain with the head checkpoints: a checkpointed entry missing from the
    end is truncation; one whose MAC differs means the chain was rewritten (with the key)."""
    newest = max(h.seq for h in heads)
    head_mac = log[-1].mac if log else ""
    common = {"checkpoints": len(heads), "anchored_to": min(newest, len(log) - 1)}
    matched, rewritten = -1, None
    for head in sorted(heads, key=lambda h: h.seq):
        if head.seq >= len(log):
            break
        if log[head.seq].mac == head.entry_mac:
            matched = head.seq
        elif rewritten is None:
            rewritten = (matched + 1, head)
    if rewritten is not None:
        start, head = rewritten
        problem = (
            f"the chain was rewritten: entry {head.seq} is not the one the head checkpoint "
            f"written at {head.written} recorded (line {head.line}); the first rewritten entry "
            f"is between entry {start} and entry {head.seq}"
        )
        return Verification(len(log), head_mac, start, problem, REWRITTEN, **common)
    if newest >= len(log):
        head = next(h for h in heads if h.seq == newest)
        ends = f"ends at entry {len(log) - 1}" if log else "is empty"
        gone = f"entry {len(log)}" if newest == len(log) else f"entries {len(log)} to {newest}"
        problem = (
            f"the newest entries were deleted: the log {ends}, but the head checkpoint written "
            f"at {head.written} (line {head.line}) recorded entry {newest}; {gone} are missing"
        )
        return Verification(len(log), head_mac, len(log), problem, TRUNCATED, **common)
    return Verification(len(log), head_mac, **common)


def verify_legacy(rows: list[tuple]) -> int | None:
    """The first bad position of an old-format chain (rows of `audit_log` in seq order), or None."""
    expected = GENESIS
    for i, (seq, time, kind, payload, prev_hash, entry_hash) in enumerate(rows):
        if seq != i or prev_hash != expected:
            return i
        if legacy_hash(prev_hash, time, kind, payload) != entry_hash:
            return i
        expected = entry_hash
    return None


def verify_store(
    data_dir: Path | None,
    url: str | None = None,
    key: bytes | None = None,
    checkpoints: Path | None = None,
    use_checkpoints: bool = True,
) -> Verification:
    """Open the store read-only and verify it, against its head checkpoints unless
    `use_checkpoints` is False. Raises `AuditStoreError` (or `AuditKeyError`) when it cannot be
    checked: no key, a missing, unreadable or empty store, no table, no head checkpoints, or a
    store in the old unkeyed format only."""
    from lending_pipeline.ml import audit_heads

    key = audit_key() if key is None else key
    path = checkpoints or checkpoints_path(data_dir)
    has_heads = path is not None and path.is_file() and path.stat().st_size > 0
    heads, damaged = None, None
    if use_checkpoints and has_heads:  # read before the log: every head read is in the log read
        try:
            heads = audit_heads.read_checkpoints(path, key)
        except audit_heads.CheckpointError as exc:
            damaged = str(exc)
    reader = open_reader(data_dir, url)
    try:
        log, legacy, where = list(reader.entries()), reader.legacy(), reader.where
    finally:
        reader.close()
    if not log and legacy:
        raise AuditStoreError(_legacy_only(where, legacy))
    if not log and not heads and not damaged:
        raise AuditStoreError(f"the audit log at {where} is empty: nothing to verify")
    if use_checkpoints and not has_heads:
        raise AuditStoreError(
            f"no head checkpoints at {path or '(no data dir)'} ({CHECKPOINTS_ENV}): without them "
            "the deletion of the newest entries and a rewrite by a key holder cannot be "
            "detected (--no-checkpoints checks the MAC chain alone)"
        )
    if damaged:
        return Verification(len(log), problem=damaged, finding=CHECKPOINTS)
    result = verify(log, key, heads)
    if result.ok and (legacy or log[0].kind == LEGACY_SEALED):
        return _check_legacy(result, log, legacy or [])
    return result


def _legacy_only(where: str, rows: list[tuple]) -> str:
    broken = verify_legacy(rows)
    state = "intact" if broken is None else f"broken at entry {broken}"
    return (
        f"the audit log at {where} is in the old unkeyed format (table {LEGACY_TABLE}, "
        f"{len(rows)} entries, written before keyed MACs): its plain SHA-256 chain is {state}, "
        "but anyone who could write the store could have rewritten it, so it cannot be verified. "
        f"The next append with {AUDIT_KEY_ENV} set starts the keyed chain (table {TABLE}) and "
        "seals these entries in its first entry; from then on `audit verify` checks them "
        "against that seal."
    )


def _check_legacy(result: Verification, log: list[Entry], rows: list[tuple]) -> Verification:
    """An intact keyed chain, and old-format rows beside it: they must be what entry 0 sealed."""
    seal = log[0].data if log[0].kind == LEGACY_SEALED else None
    if seal is None:
        problem = (
            f"table {LEGACY_TABLE} holds {len(rows)} entries in the old unkeyed format that the "
            "keyed chain does not seal (its first entry is not a legacy seal): they were written "
            "after the keyed chain began (an old version still writing?) or added by hand"
        )
        return Verification(result.entries, result.head_mac, None, problem, LEGACY)
    broken = verify_legacy(rows)
    changes = []
    if broken is not None:
        changes.append(f"their hash chain is broken at old entry {broken}")
    if not rows:
        changes.append(f"none is left where {seal['entries']} were sealed")
    elif len(rows) != seal["entries"]:
        changes.append(f"there are {len(rows)} where {seal['entries']} were sealed")
    elif rows[-1][5] != seal["head_hash"]:
        changes.append("their head hash is not the sealed one")
    if changes:
        problem = (
            f"the old-format entries (table {LEGACY_TABLE}) changed after entry 0 sealed them at "
            f"{log[0].time}: {'; '.join(changes)}"
        )
        return Verification(result.entries, result.head_mac, None, problem, LEGACY)
    note = (
        f"{len(rows)} older entries in the old unkeyed format (table {LEGACY_TABLE}) are "
        f"unchanged since entry 0 sealed them at {log[0].time}; before that only a plain hash "
        "chain protected them"
    )
    return Verification(
        result.entries,
        result.head_mac,
        checkpoints=result.checkpoints,
        anchored_to=result.anchored_to,
        notes=(*result.notes, note),
    )
