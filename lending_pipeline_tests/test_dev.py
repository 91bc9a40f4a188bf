"""`make dev`'s launcher: which processes it starts, on loopback, and that it starts quietly."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lending_pipeline.dev import dagster_command, evidently_command, mlflow_command
from lending_pipeline_tests.conftest import PII_KEY
from lending_pipeline_tests.ports import free_port
from lending_pipeline_tests.ui import ROOT


def test_dagster_ui_runs_through_dg_on_loopback():
    command = dagster_command(3999)
    assert Path(command[0]).name == "dg" and command[1] == "dev"
    assert command[command.index("-h") + 1] == "127.0.0.1"
    assert command[command.index("-p") + 1] == "3999"


def test_mlflow_ui_over_the_local_store_only(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LENDING_MLFLOW_PORT", "5999")
    command = mlflow_command(tmp_path)
    assert command[1] == "ui"
    assert command[command.index("--backend-store-uri") + 1].startswith("sqlite:///")
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5999"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert mlflow_command(tmp_path) is None


def test_evidently_ui_over_the_drift_workspace_on_loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("LENDING_EVIDENTLY_PORT", "8999")
    command = evidently_command(tmp_path)
    assert command[1] == "ui"
    assert command[command.index("--workspace") + 1] == str(tmp_path / "evidently")
    assert (tmp_path / "evidently").is_dir()
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "8999"


WARNING = re.compile(r"\bWARNING\b|\w+Warning:|will not be used|superseded", re.IGNORECASE)
STARTUP_TIMEOUT = 300  # four servers and the daemon on a busy 2-core machine


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


def test_make_dev_starts_without_deprecation_or_ignored_config_warnings(tmp_path):
    """The launcher as `make dev` runs it (instance config copied as the Makefile does), until
    every server answers and the daemon runs; then Ctrl-C (SIGTERM) stops all of it."""
    home = tmp_path / "home"
    (home / ".nux").mkdir(parents=True)
    shutil.copyfile(ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    ports = {name: free_port() for name in ("dagster", "docs", "mlflow", "evidently")}
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {
        "DAGSTER_HOME": str(home),
        "LENDING_DATA_DIR": str(tmp_path / "data"),
        "LENDING_PII_KEY": PII_KEY,
        "LENDING_DOCS_PORT": str(ports["docs"]),
        "LENDING_MLFLOW_PORT": str(ports["mlflow"]),
        "LENDING_EVIDENTLY_PORT": str(ports["evidently"]),
        "PYTHONPATH": str(ROOT),
    }
    log = tmp_path / "dev.log"
    command = [sys.executable, "-m", "lending_pipeline.dev", "--port", str(ports["dagster"])]
    with log.open("w") as output:
        dev = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    urls = [
        f"http://127.0.0.1:{ports['dagster']}/server_info",
        f"http://127.0.0.1:{ports['docs']}/docs/runbook.md",
        f"http://127.0.0.1:{ports['mlflow']}/health",
        f"http://127.0.0.1:{ports['evidently']}/api/projects",
    ]
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (all(_answers(url) for url in urls) and "SensorDaemon" in log.read_text()):
            assert dev.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"not up after {STARTUP_TIMEOUT} s"
            time.sleep(1)
        time.sleep(5)  # the daemon's first iterations log their warnings, if any
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=120)
    text = log.read_text()
    assert "Dagster services shut down" in text or "Shutting down" in text, text[-2000:]
    assert not [line for line in text.splitlines() if WARNING.search(line)], text
