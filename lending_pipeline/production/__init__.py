"""The production profile: Dagster on PostgreSQL, steps on Celery workers, an MLflow server,
all under one supervisord (`make up` / `make down`); see docs/deployment.md."""
