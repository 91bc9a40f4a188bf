"""The process manager of the serving stack: supervisord, configured and driven from here.

`lending-pipeline serve` writes a supervisord configuration and runs supervisord in the
foreground. Its programs:

- `proxy`: HAProxy on the public port (`proxy.py`), restarted whenever it exits;
- one program per slot (`blue`, `green`): `bentoml serve` of the Bento named in the slot's tag
  file, restarted on the same slot, with the same Bento, whenever it exits; started and stopped by
- `deployer`: the loop that makes the desired deployment the active one (`deploy.py`).

Every program is its own process group, stopped and killed as a group; each dies with
supervisord (`child.py`), and the scoring workers die with their server, so a killed process
leaves no orphan holding a port. Logs go to `<data>/serving/logs/`, created owner-only.
The deployer talks to supervisord over its XML-RPC API on a unix socket (owner-only).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import tempfile
import xmlrpc.client
from pathlib import Path

STOPPABLE = {"STARTING", "RUNNING", "BACKOFF"}
STARTABLE = {"STOPPED", "EXITED", "FATAL"}


def run_dir(data_dir: Path) -> Path:
    path = data_dir / "serving" / "run"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def logs_dir(data_dir: Path) -> Path:
    path = data_dir / "serving" / "logs"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, fewer elsewhere


def socket_file(run: Path, name: str) -> Path:
    """Where a unix socket of the run dir lives: in it, unless that path is too long for a
    socket (a deep data dir); then in an owner-only folder of the temp dir named after it."""
    path = run / name
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(run.resolve())).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"lending-{os.getuid()}-{digest}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise RuntimeError(f"{folder}: not an owner-only folder of this user; remove it")
    return folder / name


def socket_url(data_dir: Path) -> str:
    return f"unix://{socket_file(run_dir(data_dir), 'supervisor.sock')}"


def value(text: str | Path) -> str:
    return str(text).replace("%", "%%")  # supervisord interpolates %(name)s


def program(
    name: str,
    command: list[str],
    log: Path,
    stop_wait: int,
    autostart: bool = True,
    startsecs: int = 1,
    startretries: int = 1_000_000,
    directory: Path | None = None,
) -> str:
    """A `[program:...]` section: the command (each argument quoted), restarted when it exits,
    stopped with its process group, its output in `log`."""
    return "\n".join(
        [
            f"[program:{name}]",
            "command=" + " ".join(value(shlex.quote(str(part))) for part in command),
            *([f"directory={value(directory)}"] if directory else []),
            f"autostart={'true' if autostart else 'false'}",
            "autorestart=true",
            f"startsecs={startsecs}",
            f"startretries={startretries}",
            "stopasgroup=true",
            "killasgroup=true",
            f"stopwaitsecs={stop_wait}",
            f"stdout_logfile={value(log)}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=3",
            "redirect_stderr=true",
            "",
        ]
    )


def render_config(
    data_dir: Path, port: int, slots: dict[str, int], proxy_config: Path, haproxy: str
) -> str:
    """supervisord's configuration for the serving stack of `data_dir`."""
    run, logs = run_dir(data_dir), logs_dir(data_dir)
    python = sys.executable
    child = [python, "-m", "lending_pipeline.serving.child"]
    slot_ports = ",".join(f"{name}={slot_port}" for name, slot_port in slots.items())
    sections = [
        "[unix_http_server]",
        f"file={value(socket_file(run, 'supervisor.sock'))}",
        "chmod=0700",
        "",
        "[supervisord]",
        "nodaemon=true",
        f"logfile={value(logs / 'supervisord.log')}",
        "logfile_maxbytes=20MB",
        f"pidfile={value(run / 'supervisord.pid')}",
        f"childlogdir={value(logs)}",
        "umask=077",
        "identifier=lending_serving",
        *(["user=root"] if os.geteuid() == 0 else []),  # said on purpose: no warning about it
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl={value(socket_url(data_dir))}",
        "",
        program(
            "proxy",
            [*child, haproxy, "-db", "-f", str(proxy_config)],
            logs / "proxy.log",
            autostart=True,
            stop_wait=10,
        ),
    ]
    for name, slot_port in slots.items():
        command = [python, "-m", "lending_pipeline.serving.slot", "--data-dir", str(data_dir)]
        sections.append(
            program(
                name,
                [*command, name, str(slot_port)],
                logs / f"{name}.log",
                autostart=False,
                stop_wait=20,
            )
        )
    deployer = [python, "-m", "lending_pipeline.serving.deploy", "--data-dir", str(data_dir)]
    sections.append(
        program(
            "deployer",
            [*deployer, "--port", str(port), "--slots", slot_ports],
            logs / "deployer.log",
            autostart=True,
            stop_wait=10,
        )
    )
    return "\n".join(sections)


class Supervision:
    """supervisord's XML-RPC API for one serving stack."""

    def __init__(self, data_dir: Path):
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, socket_url(data_dir))
        self._api = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def state(self, name: str) -> str:
        return self._api.supervisor.getProcessInfo(name)["statename"]

    def pid(self, name: str) -> int:
        return int(self._api.supervisor.getProcessInfo(name)["pid"])

    def start(self, name: str) -> None:
        """Start a program if it is not running (does not wait for it to be ready)."""
        if self.state(name) in STARTABLE:
            self._api.supervisor.startProcess(name, False)

    def stop(self, name: str) -> None:
        """Stop a program and wait until its whole process group is gone."""
        if self.state(name) in STOPPABLE:
            self._api.supervisor.stopProcess(name, True)

    def restart(self, name: str) -> None:
        self.stop(name)
        self._api.supervisor.startProcess(name, False)
