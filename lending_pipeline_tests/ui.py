"""Helpers for browser tests: a real `dagster-webserver` over a test instance, headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from lending_pipeline_tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
UI_TIMEOUT_MS = 180_000  # a busy 2-core machine renders the asset graph slowly
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """Debian's chromium, or skip the test."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    return path


@contextmanager
def dagster_webserver(home: Path, env: dict[str, str] | None = None, timeout: float = 120):
    """`dagster-webserver` on a free loopback port over the instance in `home`; yields its URL."""
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (home / ".nux").mkdir(exist_ok=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    port = free_port()
    environment = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT), **(env or {})}
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1"]
    workspace = home / "workspace.yaml"  # the code location named as `make dev` names it
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: lending_pipeline.definitions\n"
        f"      location_name: lending_pipeline\n      working_directory: {ROOT}\n"
    )
    command += ["-p", str(port), "-w", str(workspace)]
    log = home / "webserver.log"
    with _server(command, environment, log, port, "/server_info", timeout) as base:
        yield base


@contextmanager
def evidently_ui(workspace: Path, port: int, timeout: float = 120):
    """`evidently ui`, as `make dev` starts it, over `workspace` on loopback; yields its URL."""
    log = workspace.parent / "evidently_ui.log"
    command = [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(workspace)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    environment = {**os.environ, "DO_NOT_TRACK": "true"}
    with _server(command, environment, log, port, "/api/projects", timeout) as base:
        yield base


@contextmanager
def _server(command: list[str], env: dict, log: Path, port: int, probe: str, timeout: float):
    """A server process on loopback `port`, yielded once `probe` answers; stopped afterwards."""
    with log.open("w") as output:
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{base}{probe}", timeout=2)
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"{command[0]} not up after {timeout} s"
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
