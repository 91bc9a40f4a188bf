"""The audit log in PostgreSQL: an insert-only writer that survives database restarts, a read-only
view for `audit verify`, and the setup that creates the table, the writer role and the trigger.

The table is created by `setup_postgres` (`lending-pipeline audit setup-postgres`), run once as an
administrator: the writer role may only INSERT and SELECT it, and a trigger refuses UPDATE, DELETE
and TRUNCATE from anyone (its owner included, unless they disable it: that is what the MAC chain
and the head checkpoints catch). The writer never creates anything, and refuses to run as a role
that could change the table.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

from lending_pipeline.ml import audit
from lending_pipeline.ml.audit_heads import HeadAnchoring

LOG = logging.getLogger(__name__)
_LOCK_ID = 7_204_311  # advisory lock serialising appends
# fail fast on a dead server or network: no request waits long for an unreachable database
_CONNECT = {
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 5000,
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    seq BIGINT PRIMARY KEY,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_mac TEXT NOT NULL,
    mac TEXT NOT NULL
)
"""
_REFUSE = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
_INSERT = f"INSERT INTO {audit.TABLE} ({audit.COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"


def _reason(exc: BaseException) -> str:
    """The first line of a database error (psycopg's messages hold no password)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


_BY_REQUEST = (
    f"SELECT {audit.COLUMNS} FROM {audit.TABLE} WHERE kind IN ('decision', 'override', 'shadow') "
    "AND payload::jsonb ->> 'request_id' = %s ORDER BY seq"
)


class PostgresAuditStore(HeadAnchoring):
    """A writer of the audit log in PostgreSQL (psycopg 3), as the insert-only role.

    An append on a broken connection raises `AuditUnavailable` and marks the store not ready; a
    background thread reconnects with backoff (`retry_max` seconds at most between attempts) and
    the store is ready again once it can write. Appends while it is down fail at once. When idle
    for `probe_every` seconds the thread checks the connection (`SELECT 1`), so `ready()` turns
    False without waiting for a request. `ready()` itself reads a flag: no database round trip.
    """

    def __init__(
        self,
        url: str,
        key: bytes | None = None,
        head_checkpoints: Path | None = None,
        head_checkpoint_every: float | None = None,
        probe_every: float = 1.0,
        retry_max: float = 5.0,
    ):
        import psycopg

        self._psycopg = psycopg
        self._url = url
        self._key = audit.audit_key() if key is None else key
        self._plan_heads(head_checkpoints, head_checkpoint_every)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._probe_every, self._retry_max = probe_every, retry_max
        self._db = None
        self._ready = False
        self._used = time.monotonic()
        self._problem: str | None = None
        self.reconnects = 0
        try:
            self._db = self._connect()
            self._ready = True
        except (psycopg.OperationalError, audit.AuditUnavailable) as exc:
            self._problem = _reason(exc)
            LOG.warning("audit database unavailable (%s): not ready, retrying", self._problem)
        self._watch = threading.Thread(target=self._watch_loop, name="audit-pg", daemon=True)
        self._watch.start()
        self._start_heads()

    def _connect(self):
        """A connection that can append: the table exists, the role may INSERT and SELECT it and
        nothing more, the server is not a read-only standby."""
        db = self._psycopg.connect(self._url, autocommit=True, **_CONNECT)
        try:
            user, exists, standby = db.execute(
                "SELECT current_user, to_regclass(%s) IS NOT NULL, pg_is_in_recovery()",
                (audit.TABLE,),
            ).fetchone()
            if standby:
                raise audit.AuditUnavailable("the audit database is a read-only standby")
            if not exists:
                raise audit.AuditStoreError(
                    f"no table {audit.TABLE} in the audit database (role {user}): run "
                    "`lending-pipeline audit setup-postgres` (docs/audit.md)"
                )
            may = dict(
                db.execute(
                    "SELECT p, has_table_privilege(%s, p) FROM unnest(%s::text[]) AS p",
                    (audit.TABLE, ["INSERT", "SELECT", "UPDATE", "DELETE", "TRUNCATE"]),
                ).fetchall()
            )
            if not (may["INSERT"] and may["SELECT"]):
                raise audit.AuditStoreError(
                    f"role {user} may not INSERT and SELECT {audit.TABLE}: connect as the writer "
                    "role `lending-pipeline audit setup-postgres` creates"
                )
            changes = [p for p in ("UPDATE", "DELETE", "TRUNCATE") if may[p]]
            if changes:
                raise audit.AuditStoreError(
                    f"role {user} may {', '.join(changes)} {audit.TABLE}: the service must write "
                    "as the insert-only role `lending-pipeline audit setup-postgres` creates "
                    f"({audit.AUDIT_URL_ENV}; docs/audit.md)"
                )
        except BaseException:
            db.close()
            raise
        return db

    def ready(self) -> bool:
        return self._ready

    def append(self, kind: str, payloads: list[dict]) -> list[audit.Entry]:
        if not payloads:
            return []
        with self._lock:
            db = self._db
            if db is None:
                self._wake.set()
                raise audit.AuditUnavailable(
                    f"the audit database cannot be written now ({self._problem}); reconnecting"
                )
            try:
                entries = self._write(db, kind, payloads)
            except self._psycopg.Error as exc:
                self._lose(exc)
                raise audit.AuditUnavailable(f"audit append failed: {_reason(exc)}") from exc
            self._used = time.monotonic()
        self._head_due.set()
        return entries

    def _write(self, db, kind: str, payloads: list[dict]) -> list[audit.Entry]:
        with db.transaction(), db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            cursor.execute(f"SELECT seq, mac FROM {audit.TABLE} ORDER BY seq DESC LIMIT 1")
            last_seq, last_mac = cursor.fetchone() or (-1, audit.GENESIS)
            sealed = []
            if last_seq == -1:
                legacy = _legacy_rows(cursor)
                if legacy:
                    seal = [audit.legacy_seal(legacy)]
                    sealed = audit.chain(self._key, -1, audit.GENESIS, audit.LEGACY_SEALED, seal)
                    last_seq, last_mac = sealed[-1].seq, sealed[-1].mac
            entries = audit.chain(self._key, last_seq, last_mac, kind, payloads)
            cursor.executemany(_INSERT, sealed + entries)
        return entries

    def _lose(self, exc: BaseException) -> None:
        """Drop a failed connection (the lock is held): not ready until reconnected."""
        self._problem = _reason(exc)
        if self._ready:
            LOG.warning("audit database lost (%s): not ready until writable", self._problem)
        self._ready = False
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):  # the connection is gone either way
                db.close()
        self._wake.set()

    def _watch_loop(self) -> None:
        delay = 0.05
        while not self._closing.is_set():
            if self._ready:
                delay = 0.05
                self._wake.wait(self._probe_every)
                self._wake.clear()
                if self._ready and not self._closing.is_set():
                    self._probe()
            elif not self._reconnect():
                self._closing.wait(delay)
                delay = min(delay * 2, self._retry_max)

    def _probe(self) -> None:
        """Check an idle connection; never waits for an append in progress."""
        if time.monotonic() - self._used < self._probe_every:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._db is not None:
                self._db.execute("SELECT 1")
                self._used = time.monotonic()
        except self._psycopg.Error as exc:
            self._lose(exc)
        finally:
            self._lock.release()

    def _reconnect(self) -> bool:
        try:
            db = self._connect()
        except (self._psycopg.Error, audit.AuditStoreError, audit.AuditUnavailable) as exc:
            reason = _reason(exc)
            if reason != self._problem:
                level = logging.ERROR if isinstance(exc, audit.AuditStoreError) else logging.WARNING
                LOG.log(level, "audit database not writable yet: %s", reason)
                self._problem = reason
            return False
        with self._lock:
            if self._closing.is_set():
                db.close()
                return True
            self._db, self._ready, self._problem = db, True, None
            self._used = time.monotonic()
            self.reconnects += 1
        LOG.warning("audit database writable again: ready")
        return True

    def _newest(self) -> audit.Entry | None:
        row = self._query(f"SELECT {audit.COLUMNS} FROM {audit.TABLE} ORDER BY seq DESC LIMIT 1")
        return audit.Entry(*row[0]) if row else None

    def entries(self):
        rows = self._query(f"SELECT {audit.COLUMNS} FROM {audit.TABLE} ORDER BY seq")
        for row in rows:
            yield audit.Entry(*row)

    def request_entries(self, request_id: str) -> list[audit.Entry]:
        """The decision and override entries of one request id, in order."""
        return [audit.Entry(*row) for row in self._query(_BY_REQUEST, (request_id,))]

    def _query(self, statement: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            if self._db is None:
                raise audit.AuditUnavailable(
                    f"the audit database cannot be read now ({self._problem})"
                )
            try:
                return self._db.execute(statement, params).fetchall()
            except self._psycopg.Error as exc:
                self._lose(exc)
                raise audit.AuditUnavailable(f"audit read failed: {_reason(exc)}") from exc

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        self._watch.join()
        self._stop_heads()
        with self._lock:
            self._ready = False
            if self._db is not None:
                self._db.close()
                self._db = None


def _legacy_rows(cursor) -> list[tuple] | None:
    """The old-format rows (table `audit_log`, seq order), or None without that table (or
    without the right to read it)."""
    cursor.execute(
        "SELECT to_regclass(%s) IS NOT NULL AND has_table_privilege(%s, 'SELECT')",
        (audit.LEGACY_TABLE, audit.LEGACY_TABLE),
    )
    if not cursor.fetchone()[0]:
        return None
    cursor.execute(
        "SELECT seq, time, kind, payload, prev_hash, entry_hash "
        f"FROM {audit.LEGACY_TABLE} ORDER BY seq"
    )
    return cursor.fetchall()


class PostgresReader:
    """The audit table read in a read-only session: nothing is created, ever."""

    def __init__(self, url: str):
        import psycopg

        self._psycopg = psycopg
        try:
            self._db = psycopg.connect(url, autocommit=True, **_CONNECT)
        except psycopg.Error as exc:
            reason = _reason(exc)
            raise audit.AuditStoreError(f"cannot connect to the audit database: {reason}") from None
        info = self._db.info
        self.where = f"PostgreSQL database {info.dbname} on {info.host}:{info.port}"
        try:
            self._db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            self._tables = self._db.execute(
                "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                (audit.TABLE, audit.LEGACY_TABLE),
            ).fetchone()
        except psycopg.Error as exc:
            self._db.close()
            raise audit.AuditStoreError(f"{self.where}: {_reason(exc)}") from None
        if not any(self._tables):
            self._db.close()
            raise audit.AuditStoreError(
                f"no audit table ({audit.TABLE}) in {self.where}: it was never set up "
                "(`lending-pipeline audit setup-postgres`) or it was dropped"
            )

    def _rows(self, statement: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._db.execute(statement, params).fetchall()
        except self._psycopg.Error as exc:
            raise audit.AuditStoreError(f"{self.where}: {_reason(exc)}") from None

    def entries(self) -> list[audit.Entry]:
        if not self._tables[0]:
            return []
        rows = self._rows(f"SELECT {audit.COLUMNS} FROM {audit.TABLE} ORDER BY seq")
        return [audit.Entry(*row) for row in rows]

    def request_entries(self, request_id: str) -> list[audit.Entry]:
        """The decision and override entries of one request id, in order."""
        if not self._tables[0]:
            return []
        return [audit.Entry(*row) for row in self._rows(_BY_REQUEST, (request_id,))]

    def legacy(self) -> list[tuple] | None:
        if not self._tables[1]:
            return None
        return self._rows(
            "SELECT seq, time, kind, payload, prev_hash, entry_hash "
            f"FROM {audit.LEGACY_TABLE} ORDER BY seq"
        )

    def close(self) -> None:
        self._db.close()


def setup_postgres(
    admin_url: str, writer_role: str, password: str | None = None, schema: str | None = None
) -> list[str]:
    """Create (or bring up to date) the audit table, the trigger refusing UPDATE, DELETE and
    TRUNCATE, and a login role that may only INSERT and SELECT it, in one transaction as an
    administrator. The password is sent as a SCRAM verifier, never in clear. Returns what was
    done, one line each."""
    import psycopg
    from psycopg import sql

    done = []
    with psycopg.connect(admin_url, autocommit=True, **_CONNECT) as db, db.transaction():
        schema = schema or db.execute("SELECT current_schema()").fetchone()[0]
        if not schema:
            raise audit.AuditStoreError("the admin connection has no current schema: --schema")
        role = sql.Identifier(writer_role)
        found = db.execute(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s", (writer_role,)
        ).fetchone()
        if found and found[0]:
            raise audit.AuditStoreError(
                f"role {writer_role} is a superuser (or bypasses row security): choose a role "
                "that is neither"
            )
        db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        table = sql.Identifier(schema, audit.TABLE)
        db.execute(sql.SQL(_SCHEMA).format(table=table))
        owner = db.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = %s",
            (schema, audit.TABLE),
        ).fetchone()[0]
        if owner == writer_role:
            raise audit.AuditStoreError(
                f"role {writer_role} owns {schema}.{audit.TABLE}: the writer must not own it"
            )
        done.append(f"table {schema}.{audit.TABLE} (owner {owner})")
        if not found:
            db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            done.append(f"created login role {writer_role}")
        if password:
            verifier = db.pgconn.encrypt_password(
                password.encode(), writer_role.encode(), b"scram-sha-256"
            )
            db.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(verifier.decode()))
            )
            done.append(f"set the password of {writer_role} (as a SCRAM verifier)")
        function = sql.Identifier(schema, "audit_log_append_only")
        db.execute(sql.SQL(_REFUSE).format(function=function))
        tables = [audit.TABLE]
        if db.execute("SELECT to_regclass(%s)", (f"{schema}.{audit.LEGACY_TABLE}",)).fetchone()[0]:
            tables.append(audit.LEGACY_TABLE)
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role))
        for name in tables:
            target = sql.Identifier(schema, name)
            for suffix, when in (
                ("append_only", "BEFORE UPDATE OR DELETE ON {} FOR EACH ROW"),
                ("no_truncate", "BEFORE TRUNCATE ON {} FOR EACH STATEMENT"),
            ):
                trigger = sql.Identifier(f"{name}_{suffix}")
                db.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, target))
                db.execute(
                    sql.SQL("CREATE TRIGGER {} " + when + " EXECUTE FUNCTION {}()").format(
                        trigger, target, function
                    )
                )
            db.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(target))
            db.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(target, role))
            grant = "SELECT, INSERT" if name == audit.TABLE else "SELECT"
            db.execute(sql.SQL(f"GRANT {grant} ON {{}} TO {{}}").format(target, role))
            done.append(f"{writer_role} may {grant} {schema}.{name}; changes refused by trigger")
        database = db.info.dbname
        db.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path TO {}").format(
                role, sql.Identifier(database), sql.Identifier(schema)
            )
        )
        done.append(f"search_path of {writer_role} in database {database}: {schema}")
        leaks = db.execute(
            "SELECT p FROM unnest(%s::text[]) AS p WHERE has_table_privilege(%s, %s, p)",
            (["UPDATE", "DELETE", "TRUNCATE"], writer_role, f"{schema}.{audit.TABLE}"),
        ).fetchall()
        if leaks:
            raise audit.AuditStoreError(
                f"role {writer_role} may still {', '.join(p for (p,) in leaks)} the audit table "
                "through a role it belongs to: choose a role without such memberships"
            )
    return done
