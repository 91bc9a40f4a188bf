"""Switch off the usage telemetry of every library the project runs.

A lending platform sends nothing out. These variables are read by the libraries when they start
their telemetry, so they are forced before any of them is imported by project code.
"""

import os

TELEMETRY_OFF = {
    "DAGSTER_DISABLE_TELEMETRY": "yes",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
}


def disable_telemetry() -> None:
    """Set the opt-out variables of Dagster, MLflow, BentoML, Evidently and Great Expectations."""
    os.environ.update(TELEMETRY_OFF)
