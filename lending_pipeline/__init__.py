"""lending_pipeline: a declarative MLOps pipeline for credit-risk models."""

from lending_pipeline.telemetry import disable_telemetry

disable_telemetry()
