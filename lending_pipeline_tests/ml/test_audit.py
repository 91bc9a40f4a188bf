"""The audit log on SQLite: the keyed MAC chain, head checkpoints, `audit verify` failing closed,
and stores in the old unkeyed format. Each tampering is done to the real database file, the way
someone who can write it would (triggers dropped first)."""

import sqlite3
import time

import pytest

from lending_pipeline import cli
from lending_pipeline.ml import audit, audit_heads
from lending_pipeline.ml.audit_sqlite import SqliteAuditStore
from lending_pipeline_tests.conftest import AUDIT_KEY

KEY = AUDIT_KEY.encode()


def filled(store, n=6):
    for i in range(n):
        store.append("decision", [{"request_id": f"r{i}", "decision": "approve", "i": i}])
    return store


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def store(data_dir):
    store = filled(audit.open_store(data_dir))
    store.checkpoint_head()
    yield store
    store.close()


def db_path(data_dir):
    return audit.default_path(data_dir)


def tamper(data_dir, *statements):
    """Change the file as someone who can write it: drop the guard triggers, run statements."""
    db = sqlite3.connect(db_path(data_dir), isolation_level=None)
    db.execute(f"DROP TRIGGER IF EXISTS {audit.TABLE}_no_update")
    db.execute(f"DROP TRIGGER IF EXISTS {audit.TABLE}_no_delete")
    for sql, args in statements:
        db.execute(sql.replace("LOG", audit.TABLE), args)
    db.close()


def rows(data_dir) -> list[audit.Entry]:
    db = sqlite3.connect(db_path(data_dir))
    found = [audit.Entry(*r) for r in db.execute(f"SELECT {audit.COLUMNS} FROM {audit.TABLE}")]
    db.close()
    return sorted(found)


def rewrite(data_dir, entries: list[audit.Entry]):
    """Replace the whole table by `entries` (what a key holder, or a forger, would store)."""
    tamper(data_dir, ("DELETE FROM LOG", ()))
    db = sqlite3.connect(db_path(data_dir), isolation_level=None)
    db.executemany(f"INSERT INTO {audit.TABLE} VALUES (?, ?, ?, ?, ?, ?)", entries)
    db.close()


def remac(entries: list[audit.Entry], start: int, key=KEY) -> list[audit.Entry]:
    """Recompute the MAC of every entry from `start` on (a rewrite with `key`)."""
    out = list(entries[:start])
    for entry in entries[start:]:
        prev = out[-1].mac if out else audit.GENESIS
        mac = audit.entry_mac(key, entry.seq, entry.time, entry.kind, entry.payload, prev)
        out.append(entry._replace(prev_mac=prev, mac=mac))
    return out


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- the key ----------------------------------------------------------------------------------


def test_the_key_is_read_as_hex_or_text_from_the_environment_or_a_file(tmp_path):
    hex_key = "ab" * 32
    assert audit.audit_key({"LENDING_AUDIT_KEY": hex_key}) == bytes.fromhex(hex_key)
    assert audit.audit_key({"LENDING_AUDIT_KEY": "a text key of some length"}) == (
        b"a text key of some length"
    )
    key_file = tmp_path / "audit_key"
    key_file.write_text(hex_key + "\n")
    assert audit.audit_key({"LENDING_AUDIT_KEY_FILE": str(key_file)}) == bytes.fromhex(hex_key)


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "LENDING_AUDIT_KEY .* or LENDING_AUDIT_KEY_FILE"),
        ({"LENDING_AUDIT_KEY": "short-secret"}, "shorter than 16 bytes"),
        ({"LENDING_AUDIT_KEY_FILE": "/nonexistent/audit_key"}, "cannot be read"),
        (
            {"LENDING_AUDIT_KEY": "same-key-0123456789", "LENDING_PII_KEY": "same-key-0123456789"},
            "same as LENDING_PII_KEY",
        ),
    ],
)
def test_a_missing_or_unfit_key_is_refused_without_showing_it(env, message):
    with pytest.raises(audit.AuditKeyError, match=message) as refused:
        audit.audit_key(env)
    for value in env.values():
        if "/" not in value:
            assert value not in str(refused.value)


def test_an_empty_key_file_is_refused(tmp_path):
    (tmp_path / "key").write_text("\n")
    with pytest.raises(audit.AuditKeyError, match="is empty"):
        audit.audit_key({"LENDING_AUDIT_KEY_FILE": str(tmp_path / "key")})


def test_no_writer_opens_without_a_key_and_nothing_is_created(data_dir, monkeypatch):
    monkeypatch.delenv("LENDING_AUDIT_KEY")
    with pytest.raises(audit.AuditKeyError, match="LENDING_AUDIT_KEY"):
        audit.open_store(data_dir)
    assert not data_dir.exists()


# --- the chain ----------------------------------------------------------------------------------


def test_an_untouched_chain_verifies_and_batches_chain_too(store, data_dir):
    store.append("decision", [{"i": 10}, {"i": 11}, {"i": 12}])
    entries = list(store.entries())
    result = audit.verify(entries)
    assert result.ok and result.entries == 9 and result.head_mac == entries[-1].mac
    assert [e.seq for e in entries] == list(range(9))
    assert entries[0].prev_mac == audit.GENESIS
    assert all(b.prev_mac == a.mac for a, b in zip(entries, entries[1:], strict=False))


@pytest.mark.parametrize("field", audit.Entry._fields)
def test_every_stored_field_is_covered_by_the_mac(store, field):
    entries = list(store.entries())
    changed = {"seq": 9, "prev_mac": "f" * 64, "mac": "e" * 64}.get(field, "x")
    entries[3] = entries[3]._replace(**{field: changed})
    assert not audit.authentic(KEY, entries[3])
    result = audit.verify(sorted(entries))
    assert not result.ok and result.first_bad == 3, result


def test_a_chain_recomputed_without_the_key_is_named_at_the_edit(store, data_dir):
    """What defeated the plain SHA-256 chain: edit an entry and recompute every later link."""
    entries = list(store.entries())
    entries[2] = entries[2]._replace(payload=entries[2].payload.replace("approve", "decline"))
    rewrite(data_dir, remac(entries, 2, key=b"a guess at the key, not the key"))
    result = audit.verify_store(data_dir)
    assert result.finding == audit.EDITED and result.first_bad == 2, result


def test_an_edited_entry_is_named(store, data_dir):
    tamper(
        data_dir,
        ("UPDATE LOG SET payload = replace(payload, 'approve', 'decline') WHERE seq = 3", ()),
    )
    result = audit.verify_store(data_dir)
    assert result.finding == audit.EDITED and result.first_bad == 3 and "edited" in result.problem


@pytest.mark.parametrize(
    "statements, first_bad, words",
    [
        ([("DELETE FROM LOG WHERE seq = 2", ())], 2, "entry 2 was deleted"),
        ([("DELETE FROM LOG WHERE seq BETWEEN 1 AND 3", ())], 1, "entries 1 to 3 were deleted"),
        (
            [
                ("DELETE FROM LOG WHERE seq = 2", ()),
                ("UPDATE LOG SET seq = seq - 1 WHERE seq > 2", ()),
            ],
            2,
            "entry 2 was deleted and the later entries renumbered",
        ),
    ],
)
def test_deleted_entries_are_named(store, data_dir, statements, first_bad, words):
    tamper(data_dir, *statements)
    result = audit.verify_store(data_dir)
    assert result.finding == audit.DELETED and result.first_bad == first_bad, result
    assert words in result.problem


def test_an_inserted_entry_is_named_even_when_it_links_properly(store, data_dir):
    entries = list(store.entries())
    forged = audit.canonical({"request_id": "forged", "decision": "approve"})
    tamper(
        data_dir,
        ("UPDATE LOG SET seq = seq + 100 WHERE seq >= 3", ()),
        ("UPDATE LOG SET seq = seq - 99 WHERE seq >= 100", ()),
        (
            "INSERT INTO LOG VALUES (3, ?, 'decision', ?, ?, ?)",
            (entries[2].time, forged, entries[2].mac, "ab" * 32),
        ),
    )
    result = audit.verify_store(data_dir)
    assert result.finding == audit.INSERTED and result.first_bad == 3, result


def test_a_badly_linked_insertion_is_named(store, data_dir):
    tamper(
        data_dir,
        ("UPDATE LOG SET seq = seq + 100 WHERE seq >= 3", ()),
        ("UPDATE LOG SET seq = seq - 99 WHERE seq >= 100", ()),
        ("INSERT INTO LOG VALUES (3, 't', 'decision', '{}', ?, ?)", ("0" * 64, "1" * 64)),
    )
    result = audit.verify_store(data_dir)
    assert result.finding == audit.INSERTED and result.first_bad == 3, result


@pytest.mark.parametrize("first, second", [(1, 4), (2, 3)])
def test_reordered_entries_are_named(store, data_dir, first, second):
    tamper(
        data_dir,
        ("UPDATE LOG SET seq = -1 WHERE seq = ?", (first,)),
        ("UPDATE LOG SET seq = ? WHERE seq = ?", (first, second)),
        ("UPDATE LOG SET seq = ? WHERE seq = -1", (second,)),
    )
    result = audit.verify_store(data_dir)
    assert result.finding == audit.REORDERED and result.first_bad == first, result
    assert f"written as entry {second}" in result.problem


@pytest.mark.parametrize("deleted", [1, 4])
def test_the_newest_entries_deleted_are_named_against_the_last_checkpoint(store, data_dir, deleted):
    tamper(data_dir, ("DELETE FROM LOG WHERE seq >= ?", (6 - deleted,)))
    assert audit.verify(rows(data_dir)).ok  # the MAC chain alone cannot see it
    result = audit.verify_store(data_dir)
    assert result.finding == audit.TRUNCATED and result.first_bad == 6 - deleted, result
    assert "recorded entry 5" in result.problem


def test_every_entry_deleted_is_truncation_not_an_empty_log(store, data_dir):
    tamper(data_dir, ("DELETE FROM LOG", ()))
    result = audit.verify_store(data_dir)
    assert result.finding == audit.TRUNCATED and result.first_bad == 0


def test_a_chain_rewritten_with_the_key_is_named_against_the_checkpoints(store, data_dir):
    """A key holder edits entry 4 and re-MACs the rest: the MAC chain verifies, the head
    checkpoints (taken at entry 2 and entry 5) do not agree."""
    store.append("decision", [{"i": 6}])
    entries = list(store.entries())
    first = audit_heads.write_checkpoint(audit.checkpoints_path(data_dir), KEY, entries[2])
    assert first["seq"] == 2
    entries[4] = entries[4]._replace(payload=entries[4].payload.replace("approve", "decline"))
    rewritten = remac(entries, 4)
    rewrite(data_dir, rewritten)
    assert audit.verify(rewritten).ok
    result = audit.verify_store(data_dir)
    assert result.finding == audit.REWRITTEN and result.first_bad == 3, result
    assert "between entry 3 and entry 5" in result.problem


def test_a_chain_rewritten_and_extended_is_still_caught(store, data_dir):
    """Rewrite from entry 1 and append past the old head: the old checkpoint still disagrees."""
    entries = list(store.entries())
    entries[1] = entries[1]._replace(payload=audit.canonical({"forged": True}))
    longer = [*entries, entries[-1]._replace(seq=6), entries[-1]._replace(seq=7)]
    rewrite(data_dir, remac(longer, 1))
    result = audit.verify_store(data_dir)
    assert result.finding == audit.REWRITTEN and result.first_bad == 0


def test_a_log_read_with_another_key_says_so(store, data_dir):
    result = audit.verify_store(
        data_dir, key=b"another key, 32 bytes long......", use_checkpoints=False
    )
    assert result.finding == audit.KEY_MISMATCH and "LENDING_AUDIT_KEY" in result.problem


def test_the_guard_triggers_refuse_changes_through_sqlite(store, data_dir):
    db = sqlite3.connect(db_path(data_dir), isolation_level=None)
    for statement in (f"UPDATE {audit.TABLE} SET kind = 'x'", f"DELETE FROM {audit.TABLE}"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(statement)
    db.close()
    assert audit.verify_store(data_dir).ok


# --- head checkpoints ---------------------------------------------------------------------------


def checkpoint_lines(data_dir) -> list[str]:
    return audit.checkpoints_path(data_dir).read_text().splitlines()


def test_checkpoints_are_written_in_the_background_and_on_close(data_dir):
    store = audit.open_store(data_dir, head_checkpoint_every=0.05)
    try:
        store.append("decision", [{"i": 0}])
        deadline = time.monotonic() + 10
        while not audit.checkpoints_path(data_dir).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(checkpoint_lines(data_dir)) == 1
        time.sleep(0.2)  # idle: nothing new to record
        assert len(checkpoint_lines(data_dir)) == 1
        store.append("decision", [{"i": 1}, {"i": 2}])
    finally:
        store.close()
    heads = audit_heads.read_checkpoints(audit.checkpoints_path(data_dir), KEY)
    assert heads[-1].seq == 2 and len(heads) in (2, 3)
    assert oct(audit.checkpoints_path(data_dir).stat().st_mode & 0o777) == "0o600"
    assert audit.verify_store(data_dir).anchored_to == 2


def test_writers_sharing_a_checkpoint_file_keep_one_chain_of_lines(data_dir):
    stores = [audit.open_store(data_dir) for _ in range(2)]
    try:
        for i in range(5):
            for store in stores:
                store.append("decision", [{"i": i}])
                store.checkpoint_head()
    finally:
        for store in stores:
            store.close()
    heads = audit_heads.read_checkpoints(audit.checkpoints_path(data_dir), KEY)
    assert [h.seq for h in heads] == list(range(10))


def test_checkpoints_can_live_elsewhere(data_dir, tmp_path, monkeypatch):
    elsewhere = tmp_path / "other-host" / "heads.jsonl"
    monkeypatch.setenv("LENDING_AUDIT_CHECKPOINTS", str(elsewhere))
    store = filled(audit.open_store(data_dir), 2)
    store.checkpoint_head()
    store.close()
    assert elsewhere.exists() and not (data_dir / "audit" / "head_checkpoints.jsonl").exists()
    assert audit.verify_store(data_dir).anchored_to == 1


def edit_line(path, number, change):
    lines = path.read_text().splitlines(keepends=True)
    lines[number] = change(lines[number])
    path.write_text("".join(lines))


@pytest.mark.parametrize(
    "damage, words",
    [
        (
            lambda p: edit_line(p, 1, lambda line: line.replace('"seq":2', '"seq":9')),
            "fails its MAC",
        ),
        (lambda p: edit_line(p, 1, lambda line: ""), "does not follow line 1"),
        (lambda p: p.write_text(p.read_text()[:-20]), "incomplete"),
        (lambda p: edit_line(p, 2, lambda line: "not json\n"), "not a head checkpoint"),
    ],
)
def test_a_damaged_checkpoint_file_is_named(store, data_dir, damage, words):
    for seq in (2, 4):
        audit_heads.write_checkpoint(
            audit.checkpoints_path(data_dir), KEY, list(store.entries())[seq]
        )
    path = audit.checkpoints_path(data_dir)
    damage(path)
    result = audit.verify_store(data_dir)
    assert result.finding == audit.CHECKPOINTS and words in result.problem, result


def test_a_checkpoint_file_written_under_another_key_is_named(store, data_dir):
    result = audit.verify_store(data_dir, key=b"another key, 32 bytes long......")
    assert result.finding == audit.CHECKPOINTS and "another audit key" in result.problem


def test_the_newest_entry_is_not_checkpointed_when_it_fails_its_mac(store, data_dir):
    tamper(data_dir, ("UPDATE LOG SET payload = '{}' WHERE seq = 5", ()))
    with pytest.raises(audit.AuditStoreError, match="fails its MAC"):
        store.checkpoint_head()


# --- audit verify fails closed and never creates what it checks -------------------------------


def test_verify_passes_and_reports_what_it_checked(store, data_dir, capsys):
    store.append("decision", [{"i": 6}])
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 0 and "intact: 7 entries" in out, err
    assert "covers entry 5 (1 newer entries not yet checkpointed)" in out


@pytest.mark.parametrize(
    "statements, finding",
    [
        ([("UPDATE LOG SET kind = 'override' WHERE seq = 1", ())], "edited at entry 1"),
        ([("DELETE FROM LOG WHERE seq = 1", ())], "deleted at entry 1"),
        ([("DELETE FROM LOG WHERE seq = 5", ())], "truncated at entry 5"),
    ],
)
def test_verify_exits_1_naming_the_finding(store, data_dir, capsys, statements, finding):
    tamper(data_dir, *statements)
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 1 and f"TAMPERED ({finding})" in err, err


def test_verify_of_a_missing_store_is_an_error_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "mistyped"
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(missing))
    assert code == 2 and "no audit log at" in err and "--data-dir" in err
    assert not missing.exists()


def test_verify_of_an_empty_file_is_an_error_and_leaves_it_empty(data_dir, capsys):
    db_path(data_dir).parent.mkdir(parents=True)
    db_path(data_dir).touch()
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 2 and "holds no audit table" in err
    assert db_path(data_dir).stat().st_size == 0


def test_verify_of_a_file_that_is_not_a_database_is_an_error(data_dir, capsys):
    db_path(data_dir).parent.mkdir(parents=True)
    db_path(data_dir).write_bytes(b"not a database " * 100)
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 2 and "cannot be read as an audit log" in err


def test_verify_of_a_directory_where_the_file_should_be_is_an_error(data_dir, capsys):
    db_path(data_dir).mkdir(parents=True)
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 2 and "is not a file" in err


def test_verify_of_a_dropped_table_is_an_error_and_does_not_recreate_it(store, data_dir, capsys):
    store.close()
    db = sqlite3.connect(db_path(data_dir))
    db.execute(f"DROP TABLE {audit.TABLE}")
    db.close()
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 2 and "no audit table" in err
    db = sqlite3.connect(db_path(data_dir))
    assert db.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    db.close()


def test_verify_of_an_empty_log_is_an_error(data_dir, capsys):
    audit.open_store(data_dir).close()
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 2 and "is empty" in err


def test_verify_without_a_key_is_an_error(store, data_dir, capsys, monkeypatch):
    monkeypatch.delenv("LENDING_AUDIT_KEY")
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 2 and "LENDING_AUDIT_KEY" in err and "LENDING_AUDIT_KEY_FILE" in err


def test_verify_without_checkpoints_is_an_error_unless_asked_for(store, data_dir, capsys):
    audit.checkpoints_path(data_dir).unlink()
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 2 and "no head checkpoints" in err and "--no-checkpoints" in err
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir), "--no-checkpoints")
    assert code == 0 and "would go unnoticed" in out


def test_verify_of_an_unknown_store_url_is_an_error(data_dir, capsys):
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir), "--url", "mysql://x")
    assert code == 2 and "LENDING_AUDIT_URL" in err


def test_open_store_refuses_an_unknown_scheme(tmp_path):
    with pytest.raises(ValueError, match="LENDING_AUDIT_URL"):
        audit.open_store(tmp_path, "mysql://somewhere")


# --- stores in the old unkeyed format -----------------------------------------------------------


def old_format_store(data_dir, n=4):
    """A store as the previous version wrote it: table `audit_log`, plain SHA-256 chain."""
    db_path(data_dir).parent.mkdir(parents=True)
    db = sqlite3.connect(db_path(data_dir), isolation_level=None)
    db.execute(
        "CREATE TABLE audit_log (seq BIGINT PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL, "
        "payload TEXT NOT NULL, prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL)"
    )
    prev = audit.GENESIS
    for seq in range(n):
        payload = audit.canonical({"old": seq})
        entry_hash = audit.legacy_hash(prev, "2025-01-01T00:00:00", "decision", payload)
        db.execute(
            "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)",
            (seq, "2025-01-01T00:00:00", "decision", payload, prev, entry_hash),
        )
        prev = entry_hash
    db.close()


def test_an_old_format_store_is_named_as_such_not_as_tampered(data_dir, capsys):
    old_format_store(data_dir)
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 2 and "old unkeyed format" in err and "4 entries" in err
    assert "TAMPERED" not in err and "chain is intact" in err


def test_the_first_keyed_entry_seals_the_old_entries_and_verify_checks_them(data_dir, capsys):
    old_format_store(data_dir)
    store = audit.open_store(data_dir)
    (written,) = store.append("decision", [{"new": 1}])
    store.checkpoint_head()
    store.close()
    entries = rows(data_dir)
    assert written.seq == 1 and entries[0].kind == audit.LEGACY_SEALED
    assert entries[0].data["entries"] == 4
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 0 and "4 older entries in the old unkeyed format" in out, err
    db = sqlite3.connect(db_path(data_dir), isolation_level=None)
    db.execute("UPDATE audit_log SET payload = '{\"old\":9}' WHERE seq = 2")
    db.close()
    code, out, err = run_cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 1 and "(legacy)" in err and "broken at old entry 2" in err


def test_old_format_entries_written_after_the_seal_are_named(data_dir):
    old_format_store(data_dir, 2)
    store = audit.open_store(data_dir)
    store.append("decision", [{"new": 1}])
    store.checkpoint_head()
    store.close()
    db = sqlite3.connect(db_path(data_dir), isolation_level=None)
    head = db.execute("SELECT entry_hash FROM audit_log WHERE seq = 1").fetchone()[0]
    text = audit.canonical({"late": True})
    db.execute(
        "INSERT INTO audit_log VALUES (2, 't', 'decision', ?, ?, ?)",
        (text, head, audit.legacy_hash(head, "t", "decision", text)),
    )
    db.close()
    result = audit.verify_store(data_dir)
    assert result.finding == audit.LEGACY and "there are 3 where 2 were sealed" in result.problem


# --- the SQLite writer --------------------------------------------------------------------------


def test_a_failed_append_leaves_the_chain_intact(store):
    with pytest.raises(TypeError):
        store.append("decision", [{"ok": 1}, {"bad": object()}, None])
    assert audit.verify(store.entries()).entries == 6
    store.append("decision", [{"ok": 2}])
    assert audit.verify(store.entries()).ok


def test_writers_sharing_the_file_keep_one_chain(store):
    """Each store links to the last entry it wrote; when another writer appended in between,
    its insert fails on `seq` and it chains to the real last entry instead."""
    other = SqliteAuditStore(store.path)
    try:
        for i in range(4):
            other.append("decision", [{"other": i}])
            store.append("decision", [{"mine": i}, {"mine": i, "second": True}])
        entries = list(store.entries())
        assert audit.verify(entries).ok
        assert [e.seq for e in entries] == list(range(6 + 4 * 3))
        assert [e.data for e in entries[6:9]] == [
            {"other": 0},
            {"mine": 0},
            {"mine": 0, "second": True},
        ]
    finally:
        other.close()


def test_background_wal_checkpoints_move_appends_into_the_database_file(tmp_path):
    store = SqliteAuditStore(tmp_path / "audit.db", checkpoint_every=0.05)
    try:
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        store.append("decision", [{"i": i, "pad": "x" * 1000} for i in range(3000)])
        deadline = time.monotonic() + 10
        while store.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.checkpoints > 0
        # the database file alone (its write-ahead log ignored) holds every entry now
        alone = sqlite3.connect(f"file:{store.path}?immutable=1", uri=True)
        assert alone.execute(f"SELECT count(*) FROM {audit.TABLE}").fetchone() == (3000,)
        alone.close()
        assert audit.verify(store.entries()).ok
    finally:
        store.close()
    assert not store._checkpointer.is_alive()


def test_a_sqlite_store_is_ready_while_open(data_dir):
    store = audit.open_store(data_dir)
    assert store.ready()
    store.close()
    assert not store.ready()


def test_old_format_entries_dropped_after_the_seal_are_named(data_dir):
    old_format_store(data_dir, 2)
    store = audit.open_store(data_dir)
    store.append("decision", [{"new": 1}])
    store.checkpoint_head()
    store.close()
    db = sqlite3.connect(db_path(data_dir), isolation_level=None)
    db.execute("DROP TABLE audit_log")
    db.close()
    result = audit.verify_store(data_dir)
    assert result.finding == audit.LEGACY and "none is left where 2 were sealed" in result.problem


def test_a_head_checkpoint_thread_needs_a_file(tmp_path):
    with pytest.raises(audit.AuditStoreError, match="LENDING_AUDIT_CHECKPOINTS"):
        SqliteAuditStore(tmp_path / "audit.db", key=KEY, head_checkpoint_every=1.0)
    assert not (tmp_path / "audit.db").exists()
