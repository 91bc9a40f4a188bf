"""A Celery worker of the production profile: the command that starts one, and the Celery
configuration module it reads (broker, backend and the late-acknowledgement settings, the same
ones the executor uses: `settings.celery_settings`)."""

from __future__ import annotations

import sys
from pathlib import Path

from lending_pipeline.production import settings

CONFIG_MODULE = "dagster_celery_config"  # the name dagster_celery.app looks for


def write_config(folder: Path, broker: str | None = None, backend: str | None = None) -> Path:
    """Write the worker's Celery configuration module into `folder` (owner-only: the broker
    URL may hold a password); returns the folder, to put on the worker's PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    values = {
        "broker_url": broker or settings.celery_broker(),
        "result_backend": backend or settings.celery_backend(),
        **settings.celery_settings(),
    }
    path = folder / f"{CONFIG_MODULE}.py"
    path.touch(mode=0o600)
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in values.items()))
    return folder


def command(name: str, loglevel: str = "INFO") -> list[str]:
    """One worker process that runs one step at a time (`solo` pool: the step runs in the
    worker process itself, so killing the worker kills the step and nothing outlives it)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "dagster_celery.app",
        "worker",
        "--pool",
        "solo",
        "--prefetch-multiplier",
        "1",
        "--queues",
        "dagster",
        "--hostname",
        f"{name}@%h",
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
