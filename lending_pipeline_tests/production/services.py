"""The machine's PostgreSQL and RabbitMQ for the production-profile tests: each test gets its own
database and its own RabbitMQ vhost (so tests and a running `make up` never share a queue), and
skips, saying why, only when a service cannot be reached."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from functools import partial
from pathlib import Path

import pytest

from lending_pipeline.production import settings, worker

PG_ADMIN = os.environ.get("LENDING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBIT = ("127.0.0.1", 5672)
PROJECT = Path(__file__).resolve().parents[2]


def reachable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(3)
        return probe.connect_ex((host, port)) == 0


def require_postgres() -> None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {settings.redacted(PG_ADMIN)} is unreachable: {exc}")


@contextlib.contextmanager
def database(prefix: str = "lending_test"):
    """A fresh database on the machine's PostgreSQL (dropped afterwards); its URL."""
    import psycopg

    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = settings.with_database(PG_ADMIN, name)
    settings.ensure_database(url)
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            for db in (name, f"{name}_mlflow", f"{name}_audit"):
                admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


RABBIT_API = os.environ.get("LENDING_TEST_RABBITMQ_API", "")  # the management API, e.g. in CI


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def _rabbit_api(method: str, path: str, body: dict | None = None) -> None:
    import base64
    import json
    import urllib.request

    request = urllib.request.Request(
        RABBIT_API.rstrip("/") + path,
        method=method,
        data=json.dumps(body or {}).encode(),
        headers={
            "content-type": "application/json",
            "authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        },
    )
    urllib.request.urlopen(request, timeout=30).close()


@contextlib.contextmanager
def vhost():
    """A fresh RabbitMQ vhost that guest may use (deleted afterwards); the broker URL. Made
    with rabbitmqctl, or with the management API at LENDING_TEST_RABBITMQ_API."""
    if not reachable(*RABBIT):
        pytest.skip(f"RabbitMQ at {RABBIT[0]}:{RABBIT[1]} is unreachable")
    name = f"lending_test_{uuid.uuid4().hex[:8]}"
    if RABBIT_API:
        _rabbit_api("PUT", f"/api/vhosts/{name}")
        permissions = {"configure": ".*", "write": ".*", "read": ".*"}
        _rabbit_api("PUT", f"/api/permissions/{name}/guest", permissions)
        drop = partial(_rabbit_api, "DELETE", f"/api/vhosts/{name}")
    else:
        if not (shutil.which("rabbitmqctl") or Path("/usr/sbin/rabbitmqctl").exists()):
            pytest.skip(
                "rabbitmqctl is not installed and LENDING_TEST_RABBITMQ_API is not set: "
                "cannot make a private vhost for this test"
            )
        made = _rabbitmqctl("add_vhost", name)
        if made.returncode != 0:
            pytest.skip(f"rabbitmqctl add_vhost failed (not allowed here?): {made.stderr.strip()}")
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        drop = partial(_rabbitmqctl, "delete_vhost", name)
    try:
        yield f"amqp://guest:guest@{RABBIT[0]}:{RABBIT[1]}/{name}"
    finally:
        drop()


class Worker:
    """One Celery worker process of the profile (its own process group), logging to a file."""

    def __init__(self, name: str, config_dir: Path, log: Path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), str(config_dir)])}
        self.log = log
        self.process = subprocess.Popen(
            worker.command(name),
            env=env,
            cwd=PROJECT,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (what a lost machine or OOM kill does)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def production_env(monkeypatch, root: Path, pg_url: str, broker: str | None) -> Path | None:
    """Point this process (and the processes it spawns) at a production-profile instance:
    PostgreSQL storage from deploy/dagster.yaml, and the Celery executor on `broker` (none: the
    in-process executor). Returns the folder of the workers' Celery configuration."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv(settings.DAGSTER_PG_URL_ENV, settings.sqlalchemy_url(pg_url))
    monkeypatch.setenv(settings.MAX_RUNS_ENV, "4")
    if broker is None:
        monkeypatch.setenv(settings.EXECUTOR_ENV, "in_process")
        return None
    monkeypatch.setenv(settings.EXECUTOR_ENV, "celery")
    monkeypatch.setenv(settings.CELERY_BROKER_ENV, broker)
    monkeypatch.setenv(settings.CELERY_BACKEND_ENV, "rpc://")
    return worker.write_config(root / "celery", broker, "rpc://")


def train_by_reference(run_config: dict):
    """In a fresh process: one training run (no Bento) on the job's configured executor."""
    import dagster as dg

    from lending_pipeline.runs import run_training_lean

    with dg.DagsterInstance.get() as instance:
        return run_training_lean(instance, run_config, package=False)


def in_fresh_process(function, *args, timeout: float = 600):
    """Call `function(*args)` in a spawned process (its own code location, read from the
    environment now in force) and return its result."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result(timeout=timeout)


def daily_by_reference(partition: str):
    """In a fresh process: one run of the daily job on the job's configured executor."""
    import dagster as dg

    from lending_pipeline.runs import run_partition_lean

    with dg.DagsterInstance.get() as instance:
        return run_partition_lean(instance, partition)


def start_in_fresh_process(function, *args):
    """Start `function(*args)` in a spawned process; the pool (to shut down) and the future."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return pool, pool.submit(function, *args)


class MlflowServer:
    """`mlflow server` on a free loopback port with its backend store at `backend`."""

    def __init__(self, backend: str, artifacts: Path, log: Path, port: int | None = None):
        from lending_pipeline_tests.ports import free_port

        self.port = port or free_port()
        self.backend, self.artifacts, self.log = backend, artifacts, log
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout: float = 120) -> None:
        import sys
        import urllib.request

        command = [
            str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1", "--backend-store-uri", self.backend,
            "--artifacts-destination", str(self.artifacts),
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/health", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.3)
        raise AssertionError(f"mlflow server not ready after {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
