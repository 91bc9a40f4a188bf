"""The audit log on PostgreSQL, against private clusters these tests start (and restart): the
setup, the insert-only writer role, each misuse refused, each tampering by the table's owner named
by `audit verify`, and recovery from a database restart."""

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from lending_pipeline import cli
from lending_pipeline.ml import audit
from lending_pipeline.ml.audit_pg import PostgresAuditStore, setup_postgres
from lending_pipeline_tests.conftest import AUDIT_KEY
from lending_pipeline_tests.postgres import Cluster

psycopg = pytest.importorskip("psycopg")
PASSWORD = "writer-password-for-tests"


@pytest.fixture(scope="module")
def cluster():
    running = Cluster()
    yield running
    running.close()


@dataclass
class Database:
    admin_url: str
    writer_url: str
    role: str
    data_dir: Path

    def admin(self):
        return psycopg.connect(self.admin_url, autocommit=True)

    def writer(self):
        return psycopg.connect(self.writer_url, autocommit=True)


def set_up(cluster, data_dir: Path) -> Database:
    name = cluster.new_database()
    role = f"writer_{uuid.uuid4().hex[:8]}"
    setup_postgres(cluster.url(name), role, PASSWORD)
    return Database(cluster.url(name), cluster.url(name, role, PASSWORD), role, data_dir)


@pytest.fixture
def database(cluster, tmp_path) -> Database:
    """A set-up database holding six decisions, written as the writer role, checkpointed."""
    db = set_up(cluster, tmp_path / "data")
    store = audit.open_store(db.data_dir, db.writer_url)
    for i in range(6):
        store.append("decision", [{"request_id": f"r{i}", "decision": "approve"}])
    store.checkpoint_head()
    store.close()
    return db


def verify_cli(capsys, db: Database, url: str | None = None) -> tuple[int, str]:
    code = cli.main(
        ["audit", "verify", "--data-dir", str(db.data_dir), "--url", url or db.admin_url]
    )
    out, err = capsys.readouterr()
    return code, out + err


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_the_service_writes_as_the_insert_only_role_and_the_log_verifies(database, capsys):
    code, text = verify_cli(capsys, database, database.writer_url)
    assert code == 0 and "intact: 6 entries" in text and "covers entry 5" in text, text
    with database.admin() as admin:
        (owner,) = admin.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = %s", (audit.TABLE,)
        ).fetchone()
    assert owner == "postgres"


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {audit.TABLE} SET payload = '{{}}' WHERE seq = 2",
        f"DELETE FROM {audit.TABLE} WHERE seq = 5",
        f"TRUNCATE {audit.TABLE}",
        f"ALTER TABLE {audit.TABLE} DISABLE TRIGGER USER",
        f"DROP TABLE {audit.TABLE}",
        f"CREATE TABLE {audit.TABLE}_copy (x int)",
    ],
)
def test_the_writer_role_may_not_change_the_table(database, capsys, statement):
    with database.writer() as writer, pytest.raises(psycopg.errors.InsufficientPrivilege):
        writer.execute(statement)
    assert verify_cli(capsys, database)[0] == 0


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {audit.TABLE} SET payload = '{{}}' WHERE seq = 2",
        f"DELETE FROM {audit.TABLE} WHERE seq = 5",
        f"TRUNCATE {audit.TABLE}",
    ],
)
def test_the_trigger_refuses_changes_by_the_owner_too(database, statement):
    with database.admin() as admin, pytest.raises(psycopg.errors.InsufficientPrivilege) as no:
        admin.execute(statement)
    assert "append-only" in str(no.value)


def remac_from(rows: list[tuple], start: int) -> list[tuple]:
    """Rows with the MACs from `start` on recomputed under the audit key (a key holder)."""
    out = [audit.Entry(*row) for row in rows[:start]]
    for row in rows[start:]:
        entry = audit.Entry(*row)
        prev = out[-1].mac if out else audit.GENESIS
        mac = audit.entry_mac(AUDIT_KEY.encode(), *entry[:4], prev)
        out.append(entry._replace(prev_mac=prev, mac=mac))
    return out


def rewrite_with_the_key(admin):
    rows = admin.execute(f"SELECT {audit.COLUMNS} FROM {audit.TABLE} ORDER BY seq").fetchall()
    rows[3] = (*rows[3][:3], '{"decision":"decline"}', *rows[3][4:])
    admin.execute(f"DELETE FROM {audit.TABLE}")
    with admin.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {audit.TABLE} VALUES (%s, %s, %s, %s, %s, %s)", remac_from(rows, 3)
        )


@pytest.mark.parametrize(
    "change, finding",
    [
        (f"UPDATE {audit.TABLE} SET payload = '{{}}' WHERE seq = 2", "edited at entry 2"),
        (f"DELETE FROM {audit.TABLE} WHERE seq = 2", "deleted at entry 2"),
        (f"DELETE FROM {audit.TABLE} WHERE seq >= 4", "truncated at entry 4"),
        (f"TRUNCATE {audit.TABLE}", "truncated at entry 0"),
        (rewrite_with_the_key, "rewritten at entry 0"),
    ],
)
def test_the_owner_bypassing_the_trigger_is_caught_by_verify(database, capsys, change, finding):
    with database.admin() as admin:
        admin.execute(f"ALTER TABLE {audit.TABLE} DISABLE TRIGGER USER")
        change(admin) if callable(change) else admin.execute(change)
    code, text = verify_cli(capsys, database)
    assert code == 1 and f"TAMPERED ({finding})" in text, text


def test_a_role_that_could_change_the_table_is_refused_as_writer(database):
    with pytest.raises(audit.AuditStoreError, match="may UPDATE, DELETE, TRUNCATE"):
        audit.open_store(database.data_dir, database.admin_url)


def test_without_setup_the_writer_is_told_to_run_it_and_verify_creates_nothing(
    cluster, tmp_path, capsys
):
    name = cluster.new_database()
    role = f"plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.url(name), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        admin.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    url = cluster.url(name, role, PASSWORD)
    with pytest.raises(audit.AuditStoreError, match="audit setup-postgres"):
        audit.open_store(tmp_path, url)
    code = cli.main(["audit", "verify", "--data-dir", str(tmp_path), "--url", url])
    assert code == 2 and "no audit table" in capsys.readouterr().err
    with psycopg.connect(cluster.url(name)) as admin:
        assert admin.execute("SELECT to_regclass(%s)", (audit.TABLE,)).fetchone() == (None,)


def test_setup_is_repeatable_and_refuses_a_superuser_as_writer(database, capsys):
    again = setup_postgres(database.admin_url, database.role, PASSWORD)
    assert any("SELECT, INSERT" in line for line in again)
    assert verify_cli(capsys, database, database.writer_url)[0] == 0
    with pytest.raises(audit.AuditStoreError, match="superuser"):
        setup_postgres(database.admin_url, "postgres")


def test_setup_from_the_command_line_takes_the_password_from_the_environment(
    cluster, tmp_path, capsys, monkeypatch
):
    name = cluster.new_database()
    role = f"writer_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AUDIT_WRITER_PASSWORD", PASSWORD)
    code = cli.main(
        ["audit", "setup-postgres", "--admin-url", cluster.url(name), "--writer-role", role,
         "--password-env", "AUDIT_WRITER_PASSWORD"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and f"created login role {role}" in out and PASSWORD not in out
    store = audit.open_store(tmp_path, cluster.url(name, role, PASSWORD))
    assert store.append("decision", [{"i": 1}])[0].seq == 0
    store.close()


def test_an_old_format_table_is_sealed_by_the_first_keyed_entry(cluster, tmp_path, capsys):
    name = cluster.new_database()
    with psycopg.connect(cluster.url(name), autocommit=True) as admin:
        admin.execute(
            "CREATE TABLE audit_log (seq BIGINT PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT "
            "NULL, payload TEXT NOT NULL, prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL)"
        )
        prev = audit.GENESIS
        for seq in range(3):
            entry_hash = audit.legacy_hash(prev, "t", "decision", "{}")
            admin.execute(
                "INSERT INTO audit_log VALUES (%s, 't', 'decision', '{}', %s, %s)",
                (seq, prev, entry_hash),
            )
            prev = entry_hash
    role = f"writer_{uuid.uuid4().hex[:8]}"
    setup_postgres(cluster.url(name), role, PASSWORD)
    db = Database(cluster.url(name), cluster.url(name, role, PASSWORD), role, tmp_path)
    assert verify_cli(capsys, db)[0] == 2  # old format only: cannot be verified
    store = audit.open_store(tmp_path, db.writer_url)
    store.append("decision", [{"new": 1}])
    store.checkpoint_head()
    store.close()
    code, text = verify_cli(capsys, db)
    assert code == 0 and "3 older entries in the old unkeyed format" in text, text


def test_the_store_survives_a_database_restart(tmp_path):
    """Appends fail and the store is not ready while the database is down; the same store object
    is ready and appending again once it is back, and the chain stays whole."""
    own = Cluster()
    try:
        db = set_up(own, tmp_path)
        heads = audit.checkpoints_path(tmp_path)
        # first outage, noticed by an append (no idle probe): it raises and marks not ready
        store = PostgresAuditStore(db.writer_url, None, heads, 0.05, probe_every=3600)
        store.append("decision", [{"i": 0}, {"i": 1}])
        assert store.ready()
        own.stop()
        with pytest.raises(audit.AuditUnavailable):
            store.append("decision", [{"i": "lost"}])
        assert not store.ready()
        with pytest.raises(audit.AuditUnavailable, match="reconnecting"):
            store.append("decision", [{"i": "lost again"}])
        own.start()
        wait_for(store.ready, 60, "the store to reconnect")
        store.append("decision", [{"i": 2}])
        store.close()
        # second outage, noticed by the idle probe before any request comes
        store = PostgresAuditStore(db.writer_url, None, heads, 0.05, probe_every=0.1)
        own.stop()
        wait_for(lambda: not store.ready(), 30, "the probe to notice the outage")
        own.start()
        wait_for(store.ready, 60, "the store to reconnect")
        (last,) = store.append("decision", [{"i": 3}])
        assert store.reconnects == 1 and last.seq == 3
        store.close()
        result = audit.verify_store(tmp_path, db.admin_url)
        assert result.ok and result.entries == 4 and result.anchored_to == 3, result
    finally:
        own.close()
