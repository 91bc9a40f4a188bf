"""`make dev`'s launcher: which processes it starts, on loopback."""

from pathlib import Path

from lending_pipeline.dev import dagster_command, mlflow_command


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
