"""Settings of the production profile, from the environment, and the URLs derived from them.

No import of Dagster, Celery or MLflow here: the embedded profile and `ml/` may read these
names without loading any of them.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

PG_URL_ENV = "LENDING_PG_URL"
PG_URL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/lending"
# The SQLAlchemy URL of Dagster's storage (deploy/dagster.yaml reads it); derived from
# LENDING_PG_URL by `dagster_storage_url` when the profile starts.
DAGSTER_PG_URL_ENV = "LENDING_DAGSTER_PG_URL"

EXECUTOR_ENV = "LENDING_EXECUTOR"
EXECUTORS = ("in_process", "celery")
CELERY_BROKER_ENV = "LENDING_CELERY_BROKER"
CELERY_BROKER_DEFAULT = "amqp://guest:guest@127.0.0.1:5672//"
CELERY_BACKEND_ENV = "LENDING_CELERY_BACKEND"
CELERY_BACKEND_DEFAULT = "rpc://"
CELERY_WORKERS_ENV = "LENDING_CELERY_WORKERS"
CELERY_WORKERS_DEFAULT = 2
# Longer than the slowest step: a broker with a visibility timeout (Redis, SQS) redelivers an
# unacknowledged step after it. RabbitMQ redelivers when the worker's connection drops.
VISIBILITY_TIMEOUT_S = 6 * 3600

MAX_RUNS_ENV = "LENDING_MAX_CONCURRENT_RUNS"
MAX_RUNS_DEFAULT = 4
MLFLOW_PORT = 5000


def pg_url() -> str:
    return os.environ.get(PG_URL_ENV) or PG_URL_DEFAULT


def executor_name() -> str:
    """`in_process` (the default) or `celery`; anything else is a configuration error."""
    name = (os.environ.get(EXECUTOR_ENV) or "in_process").strip().lower()
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected one of {', '.join(EXECUTORS)}")
    return name


def celery_broker() -> str:
    return os.environ.get(CELERY_BROKER_ENV) or CELERY_BROKER_DEFAULT


def celery_backend() -> str:
    return os.environ.get(CELERY_BACKEND_ENV) or CELERY_BACKEND_DEFAULT


def celery_workers() -> int:
    text = os.environ.get(CELERY_WORKERS_ENV) or str(CELERY_WORKERS_DEFAULT)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{CELERY_WORKERS_ENV}={text!r}: expected a whole number >= 1")
    return int(text)


def celery_settings() -> dict:
    """Celery settings of the executor and of every worker (they must agree): a step is
    acknowledged when it ends, so a killed worker's step goes back to the queue."""
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "broker_connection_retry_on_startup": True,
    }


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise ValueError(f"{PG_URL_ENV}: the URL names no database")
    return name


def sqlalchemy_url(url: str) -> str:
    """A PostgreSQL URL for SQLAlchemy with the psycopg2 driver (SQLAlchemy 2.1 maps a bare
    `postgresql://` to psycopg 3, which Dagster's and MLflow's storage are not built on)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg2"):
        raise ValueError(f"{PG_URL_ENV}: expected postgresql://..., got scheme {parts.scheme!r}")
    return urlunsplit(("postgresql+psycopg2", *parts[1:]))


def profile_urls(url: str | None = None) -> dict[str, str]:
    """The databases of the profile on one server: Dagster's, MLflow's and the audit log's
    (separate databases: Dagster and MLflow both have a table named `runs`)."""
    url = url or pg_url()
    name = database_name(url)
    return {
        "dagster": url,
        "mlflow": with_database(url, f"{name}_mlflow"),
        "audit": with_database(url, f"{name}_audit"),
    }


def redacted(url: str) -> str:
    """A URL fit to print: its password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, *parts[2:]))


# How often a server process running a statement checks that its client is still there
# (PostgreSQL 14+). Without it, the statement of a client that was killed while the statement
# waited (on a lock, a slow disk) still runs and commits when it can: Dagster inserts a run and
# its tags in two autocommitted statements, so a daemon killed there left a run whose tags (the
# run key) were never written, invisible to run-key dedupe (tests/production/test_daemon_restart).
CLIENT_CHECK_INTERVAL = "1s"


def ensure_database(url: str, timeout: float = 10) -> bool:
    """Create the database the URL names when it does not exist, and set its client check
    interval; True when it was created. Connects to the server's `postgres` database."""
    import psycopg
    from psycopg import sql

    name = database_name(url)
    admin = with_database(url, "postgres").replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=int(timeout)) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not found:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        configure_database(conn, name)
        return not found


def configure_database(conn, name: str) -> None:
    """Abandon the statements of clients that are gone (see CLIENT_CHECK_INTERVAL), for new
    sessions of database `name`; a warning where the server is too old or the role may not."""
    import warnings

    import psycopg
    from psycopg import sql

    if conn.info.server_version < 140000:
        warnings.warn(
            f"PostgreSQL {conn.info.server_version} has no client_connection_check_interval: a "
            "statement of a killed client may still commit half of what it was writing",
            stacklevel=2,
        )
        return
    statement = sql.SQL("ALTER DATABASE {} SET client_connection_check_interval = {}").format(
        sql.Identifier(name), sql.Literal(CLIENT_CHECK_INTERVAL)
    )
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege as exc:
        warnings.warn(
            f"could not set client_connection_check_interval on database {name} ({exc}); ask "
            f"its owner to run: ALTER DATABASE {name} SET client_connection_check_interval = "
            f"'{CLIENT_CHECK_INTERVAL}'",
            stacklevel=2,
        )
