"""The executor of every job, chosen by configuration (`LENDING_EXECUTOR`), not by code:
`in_process` (embedded profile, the default) or `celery` (production profile: each step a
Celery task on a worker, broker `LENDING_CELERY_BROKER`, acknowledged late)."""

from __future__ import annotations

import warnings

import dagster as dg

from lending_pipeline.production import settings


def build_executor() -> dg.ExecutorDefinition:
    if settings.executor_name() == "in_process":
        return dg.in_process_executor
    from dagster_celery import celery_executor

    # dagster-celery registers its task again for every step it submits; Celery warns each time
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")
    return celery_executor.configured(
        {
            "broker": settings.celery_broker(),
            "backend": settings.celery_backend(),
            "config_source": settings.celery_settings(),
        },
        name="celery",
    )
