"""`make dev`: the Dagster UI and daemon, the docs and reports server, the MLflow UI and the
Evidently drift dashboard, all on loopback, started together and stopped together (Ctrl-C).

`python -m lending_pipeline.dev [--port 3000]`. The docs server (`LENDING_DOCS_PORT`, 3002) is a
thread of this process; the MLflow UI (`LENDING_MLFLOW_PORT`, 5000) is started only when
`MLFLOW_TRACKING_URI` is not already an http(s) tracking server; the Evidently UI
(`LENDING_EVIDENTLY_PORT`, 8000) shows the workspace `drift_report` fills (`<data dir>/evidently`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from lending_pipeline.links import (
    DEFAULT_MLFLOW_PORT,
    MLFLOW_PORT_ENV,
    REPO_ROOT,
    evidently_port,
    evidently_ui_base,
    mlflow_ui_base,
)
from lending_pipeline.processes import stop_groups


def _bin(name: str) -> str:
    """A console script of this venv (next to the interpreter), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def dagster_command(port: int, workspace: Path | None = None) -> list[str]:
    """`dg dev` over this project (`[tool.dg]` in pyproject.toml), in this interpreter's venv;
    over `workspace` when given (several products: a code location each)."""
    command = [_bin("dg"), "dev", "--use-active-venv", "-h", "127.0.0.1", "-p", str(port)]
    return command + (["-w", str(workspace)] if workspace else [])


def mlflow_command(data_dir: Path) -> list[str] | None:
    """`mlflow ui` over the local store, or None when a tracking server is configured."""
    from lending_pipeline.ml.tracking import default_tracking_uri

    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(data_dir)
    if uri.startswith(("http://", "https://")):
        return None
    port = int(os.environ.get(MLFLOW_PORT_ENV) or DEFAULT_MLFLOW_PORT)
    (data_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    return [
        _bin("mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def evidently_command(data_dir: Path) -> list[str]:
    """`evidently ui` over the drift dashboard's workspace (created when missing)."""
    from lending_pipeline.ml.dashboard import workspace_dir

    workspace = workspace_dir(data_dir)
    workspace.mkdir(parents=True, exist_ok=True)
    return [
        _bin("evidently"), "ui", "--workspace", str(workspace), "--host", "127.0.0.1",
        "--port", str(evidently_port()),
    ]  # fmt: skip


def _exit(signum, frame) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    from lending_pipeline import docs_server
    from lending_pipeline.defs.resources import resolve_data_dir
    from lending_pipeline.product_locations import products_workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000, help="the Dagster UI's port")
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir()
    home = Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home")
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "VIRTUAL_ENV": sys.prefix,
    }

    docs = docs_server.start(data_dir)
    children = []
    mlflow = mlflow_command(data_dir)
    if mlflow:
        # MLflow's server imports APIs its dependencies deprecate: nothing for a user to act on
        ignored = "ignore::DeprecationWarning,ignore:starlette.middleware.wsgi is deprecated"
        quiet = {**env, "PYTHONWARNINGS": ignored}
        children.append(subprocess.Popen(mlflow, env=quiet, cwd=REPO_ROOT, start_new_session=True))
    evidently = evidently_command(data_dir)
    children.append(subprocess.Popen(evidently, env=env, cwd=REPO_ROOT, start_new_session=True))
    print(f"docs and reports: http://127.0.0.1:{docs.server_address[1]}/docs/runbook.md")
    print(f"MLflow UI:        {mlflow_ui_base()}")
    print(f"drift dashboard:  {evidently_ui_base()}")
    print(f"Dagster UI:       http://127.0.0.1:{args.port}", flush=True)
    dagster = subprocess.Popen(
        dagster_command(args.port, products_workspace(home)),
        env=env,
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    children.append(dagster)
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    try:
        return dagster.wait()
    finally:
        stop_groups(children)
        docs.shutdown()


if __name__ == "__main__":
    sys.exit(main())
