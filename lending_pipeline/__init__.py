"""lending_pipeline: a declarative MLOps pipeline for credit-risk models."""

import os

from lending_pipeline.telemetry import disable_telemetry

disable_telemetry()

# Dagster stores a step's materializations over a range of days, and a run's planned events, as
# batches (one transaction per database) rather than one write per event.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")
