import sqlite3
import time
import uuid

import pytest

from lending_pipeline.ml import audit


def filled(store, n=6):
    for i in range(n):
        store.append("decision", [{"request_id": f"r{i}", "decision": "approve", "i": i}])
    return store


@pytest.fixture
def sqlite_store(tmp_path):
    store = filled(audit.SqliteAuditStore(tmp_path / "audit.db"))
    yield store
    store.close()


def tamper(store, *statements):
    db = sqlite3.connect(store.path, isolation_level=None)
    for sql, args in statements:
        db.execute(sql, args)
    db.close()


def test_an_untouched_chain_verifies_and_batches_chain_too(sqlite_store):
    sqlite_store.append("decision", [{"i": 10}, {"i": 11}, {"i": 12}])
    result = audit.verify(sqlite_store.entries())
    entries = list(sqlite_store.entries())
    assert result.ok and result.entries == 9
    assert result.head_hash == entries[-1].entry_hash
    assert [e.seq for e in entries] == list(range(9))
    assert entries[0].prev_hash == audit.GENESIS


def test_an_edited_entry_is_named(sqlite_store):
    tamper(
        sqlite_store,
        ("UPDATE audit_log SET payload = replace(payload, 'approve', 'decline') WHERE seq = 3", ()),
    )
    result = audit.verify(sqlite_store.entries())
    assert not result.ok and result.first_bad == 3 and "edited" in result.problem


def test_a_deleted_entry_is_named(sqlite_store):
    tamper(sqlite_store, ("DELETE FROM audit_log WHERE seq = 2", ()))
    result = audit.verify(sqlite_store.entries())
    assert result.first_bad == 2 and "deleted" in result.problem


def test_an_inserted_entry_is_named_even_when_it_links_properly(sqlite_store):
    entries = list(sqlite_store.entries())
    forged_payload = audit.canonical({"request_id": "forged", "decision": "approve"})
    forged_hash = audit.chain_hash(
        entries[2].entry_hash, entries[2].time, "decision", forged_payload
    )
    tamper(
        sqlite_store,
        ("UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3", ()),
        ("UPDATE audit_log SET seq = seq - 99 WHERE seq >= 100", ()),
        (
            "INSERT INTO audit_log VALUES (3, ?, 'decision', ?, ?, ?)",
            (entries[2].time, forged_payload, entries[2].entry_hash, forged_hash),
        ),
    )
    result = audit.verify(sqlite_store.entries())
    assert result.first_bad == 3 and "inserted" in result.problem


def test_a_badly_linked_insertion_is_named(sqlite_store):
    tamper(
        sqlite_store,
        ("UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3", ()),
        ("UPDATE audit_log SET seq = seq - 99 WHERE seq >= 100", ()),
        (
            "INSERT INTO audit_log VALUES (3, 't', 'decision', '{}', ?, ?)",
            ("0" * 64, audit.chain_hash("0" * 64, "t", "decision", "{}")),
        ),
    )
    result = audit.verify(sqlite_store.entries())
    assert result.first_bad == 3 and "inserted" in result.problem


@pytest.mark.parametrize("first, second", [(1, 4), (2, 3)])
def test_reordered_entries_are_named(sqlite_store, first, second):
    tamper(
        sqlite_store,
        ("UPDATE audit_log SET seq = -1 WHERE seq = ?", (first,)),
        ("UPDATE audit_log SET seq = ? WHERE seq = ?", (first, second)),
        ("UPDATE audit_log SET seq = ? WHERE seq = -1", (second,)),
    )
    result = audit.verify(sqlite_store.entries())
    assert result.first_bad == first and "out of order" in result.problem


def test_a_failed_append_leaves_the_chain_intact(sqlite_store):
    with pytest.raises(TypeError):
        sqlite_store.append("decision", [{"ok": 1}, {"bad": object()}, None])
    assert audit.verify(sqlite_store.entries()).entries == 6
    sqlite_store.append("decision", [{"ok": 2}])
    assert audit.verify(sqlite_store.entries()).ok


def test_writers_sharing_the_file_keep_one_chain(sqlite_store):
    """Each store links to the last entry it wrote; when another writer appended in between,
    its insert fails on `seq` and it chains to the real last entry instead."""
    other = audit.SqliteAuditStore(sqlite_store.path)
    try:
        for i in range(4):
            other.append("decision", [{"other": i}])
            sqlite_store.append("decision", [{"mine": i}, {"mine": i, "second": True}])
        entries = list(sqlite_store.entries())
        assert audit.verify(entries).ok
        assert [e.seq for e in entries] == list(range(6 + 4 * 3))
        assert [e.data for e in entries[6:9]] == [
            {"other": 0},
            {"mine": 0},
            {"mine": 0, "second": True},
        ]
    finally:
        other.close()


def test_background_checkpoints_move_appends_into_the_database_file(tmp_path):
    store = audit.SqliteAuditStore(tmp_path / "audit.db", checkpoint_every=0.05)
    try:
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        store.append("decision", [{"i": i, "pad": "x" * 1000} for i in range(3000)])
        deadline = time.monotonic() + 10
        while store.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.checkpoints > 0
        # the database file alone (its write-ahead log ignored) holds every entry now
        alone = sqlite3.connect(f"file:{store.path}?immutable=1", uri=True)
        assert alone.execute("SELECT count(*) FROM audit_log").fetchone() == (3000,)
        alone.close()
        assert audit.verify(store.entries()).ok
    finally:
        store.close()
    assert not store._checkpointer.is_alive()


def test_open_store_refuses_an_unknown_scheme(tmp_path):
    with pytest.raises(ValueError, match="LENDING_AUDIT_URL"):
        audit.open_store(tmp_path, "mysql://somewhere")


POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url():
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not running on 127.0.0.1:5432 ({exc})")
    schema = f"audit_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()


def test_postgres_store_chains_and_detects_an_edit(postgres_url):
    store = filled(audit.open_store(None, postgres_url))
    store.append("rollback", [{"from": "2", "to": "1"}])
    assert audit.verify(store.entries()).ok
    store._db.execute("UPDATE audit_log SET payload = '{}' WHERE seq = 4")
    store._db.commit()
    result = audit.verify(store.entries())
    assert result.first_bad == 4 and "edited" in result.problem
    store.close()
