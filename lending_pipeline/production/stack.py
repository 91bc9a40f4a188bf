"""The processes of the production profile under one supervisord: `up` starts them, `down`
stops exactly them.

Programs: `mlflow` (tracking server on PostgreSQL, serving the artifacts), `webserver` (Dagster
UI), `daemon` (run queue, schedules, sensors), `worker_1..N` (Celery workers running the steps)
and `scoring` (the serving stack of `lending-pipeline serve`). Every program runs in its own
process group, stopped and killed as a group; their logs go to `<profile>/logs/`. The processes
inherit the environment of `up` (the secrets stay in memory, never in a file written here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from lending_pipeline.product_locations import products_workspace
from lending_pipeline.production import settings, worker
from lending_pipeline.serving.supervision import program, value

PROJECT = Path(__file__).resolve().parents[2]
WEBSERVER_PORT = 3000
SCORING_PORT = 3001


@dataclass(frozen=True)
class Profile:
    """Where one production profile keeps its state: the Dagster home, logs, run files."""

    root: Path
    data_dir: Path

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def socket(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def pidfile(self) -> Path:
        return self.run / "supervisord.pid"


class ProfileError(RuntimeError):
    """The profile cannot start (a service unreachable, a port taken) or is not running."""


def programs(profile: Profile, workers: int, mlflow_backend: str) -> dict[str, list[str]]:
    """The command of every program, by name."""
    bin_dir = Path(sys.executable).parent
    workspace = str(products_workspace(profile.root) or PROJECT / "workspace.yaml")
    found = {
        "mlflow": [
            str(bin_dir / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.MLFLOW_PORT),
            "--workers",
            "1",
            "--backend-store-uri",
            mlflow_backend,
            "--artifacts-destination",
            str(profile.data_dir / "mlflow" / "artifacts"),
        ],
        "webserver": [
            str(bin_dir / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(WEBSERVER_PORT),
            "-w",
            workspace,
        ],
        "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
    }
    for number in range(1, workers + 1):
        found[f"worker_{number}"] = worker.command(f"worker_{number}")
    found["scoring"] = [
        str(bin_dir / "lending-pipeline"),
        "serve",
        "--data-dir",
        str(profile.data_dir),
        "--port",
        str(SCORING_PORT),
    ]
    return found


def render_config(profile: Profile, commands: dict[str, list[str]]) -> str:
    """supervisord's configuration of the profile."""
    sections = [
        "[unix_http_server]",
        f"file={value(profile.socket)}",
        "chmod=0700",
        "",
        "[supervisord]",
        "nodaemon=false",
        f"logfile={value(profile.logs / 'supervisord.log')}",
        "logfile_maxbytes=20MB",
        f"pidfile={value(profile.pidfile)}",
        f"childlogdir={value(profile.logs)}",
        "umask=077",
        "identifier=lending_production",
        *(["user=root"] if os.geteuid() == 0 else []),
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{value(profile.socket)}",
        "",
    ]
    for name, command in commands.items():
        stop_wait = 60 if name.startswith("worker_") else 20  # a worker finishes its step
        log = profile.logs / f"{name}.log"
        sections.append(
            program(name, command, log, stop_wait, startsecs=2, startretries=5, directory=PROJECT)
        )
    return "\n".join(sections)


def api(profile: Profile):
    """supervisord's XML-RPC API of the running profile."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{profile.socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def running_pid(profile: Profile) -> int | None:
    """The pid of the profile's supervisord, when it runs."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(profile.pidfile.read_text().strip())
        if b"supervisord" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def check_broker(url: str, timeout: float = 5) -> None:
    """Connect to the Celery broker once; a clear error when it cannot be reached."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        raise ProfileError(
            f"the Celery broker ({settings.CELERY_BROKER_ENV}={settings.redacted(url)}) is "
            f"unreachable: {exc}"
        ) from exc


def prepare_databases(urls: dict[str, str]) -> list[str]:
    """Create the profile's databases that are missing; the names of those created."""
    created = []
    for url in urls.values():
        try:
            if settings.ensure_database(url):
                created.append(settings.database_name(url))
        except Exception as exc:
            raise ProfileError(
                f"PostgreSQL ({settings.PG_URL_ENV}={settings.redacted(url)}) is unreachable or "
                f"refused: {exc}"
            ) from exc
    return created


def write_instance(profile: Profile) -> Path:
    """The profile's Dagster home: deploy/dagster.yaml, and the UI's first-visit dialog seen."""
    profile.home.mkdir(parents=True, exist_ok=True)
    (profile.home / ".nux").mkdir(exist_ok=True)
    (profile.home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    target = profile.home / "dagster.yaml"
    shutil.copyfile(PROJECT / "deploy" / "dagster.yaml", target)
    return target


def profile_environment(profile: Profile, urls: dict[str, str], audit_url: str) -> dict[str, str]:
    """What every process of the profile needs in its environment, beyond the secrets."""
    config_dir = worker.write_config(profile.run / "celery")
    path = [str(PROJECT), str(config_dir)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {
        "DAGSTER_HOME": str(profile.home),
        "LENDING_DATA_DIR": str(profile.data_dir),
        settings.DAGSTER_PG_URL_ENV: settings.sqlalchemy_url(urls["dagster"]),
        settings.MAX_RUNS_ENV: os.environ.get(settings.MAX_RUNS_ENV)
        or str(settings.MAX_RUNS_DEFAULT),
        settings.EXECUTOR_ENV: "celery",
        settings.CELERY_BROKER_ENV: settings.celery_broker(),
        settings.CELERY_BACKEND_ENV: settings.celery_backend(),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{settings.MLFLOW_PORT}",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # A tracking server that is down fails a step within ~15 s, not after minutes of retries.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "LENDING_AUDIT_URL": audit_url,
        "PYTHONPATH": os.pathsep.join(path),
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        "DAGSTER_DISABLE_TELEMETRY": "true",
    }


def wait_ready(profile: Profile, names: list[str], timeout: float = 180) -> dict[str, str]:
    """Wait until every program is RUNNING and the HTTP services answer; their states."""
    checks = {
        "mlflow": f"http://127.0.0.1:{settings.MLFLOW_PORT}/health",
        "webserver": f"http://127.0.0.1:{WEBSERVER_PORT}/server_info",
    }
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {
            info["name"]: info["statename"] for info in api(profile).supervisor.getAllProcessInfo()
        }
        failed = [name for name in names if states.get(name) in ("FATAL", "EXITED")]
        if failed:
            raise ProfileError(
                f"{', '.join(failed)} could not start: see {profile.logs}/<name>.log"
            )
        answering = all(_answers(url) for url in checks.values())
        if answering and all(states.get(name) == "RUNNING" for name in names):
            return states
        time.sleep(1)
    late = [name for name in names if states.get(name) != "RUNNING"]
    raise ProfileError(f"not ready after {timeout:.0f}s: {', '.join(late) or 'HTTP checks'}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start(
    profile: Profile,
    commands: dict[str, list[str]],
    env: dict[str, str],
    ports: tuple[int, ...] = (settings.MLFLOW_PORT, WEBSERVER_PORT, SCORING_PORT),
) -> int:
    """Write the configuration and start supervisord (it daemonizes) once none of `ports` is
    taken; its pid."""
    if running_pid(profile):
        raise ProfileError(f"the profile is already running (supervisord {running_pid(profile)})")
    taken = [str(port) for port in ports if port_in_use(port)]
    if taken:
        raise ProfileError(f"port(s) {', '.join(taken)} already in use on 127.0.0.1")
    for folder in (profile.logs, profile.run):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = profile.run / "supervisord.conf"
    config.write_text(render_config(profile, commands), "utf-8")
    subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(config)],
        env={**os.environ, **env},
        check=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = running_pid(profile)
        if pid and profile.socket.exists():
            return pid
        time.sleep(0.2)
    raise ProfileError(f"supervisord did not start: see {profile.logs}/supervisord.log")


def stop(profile: Profile, timeout: float = 120) -> int | None:
    """Stop every program and supervisord itself; the pid that was stopped, None when the
    profile was not running."""
    pid = running_pid(profile)
    if pid is None:
        return None
    with contextlib.suppress(OSError, xmlrpc.client.Fault):
        api(profile).supervisor.shutdown()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(profile) == pid:
        time.sleep(0.3)
    if running_pid(profile) == pid:
        raise ProfileError(f"supervisord {pid} still running after {timeout:.0f}s")
    return pid
