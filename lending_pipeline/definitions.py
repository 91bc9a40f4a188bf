"""The Dagster code location: assembles assets, checks, jobs and resources from the spec."""

from __future__ import annotations

from functools import lru_cache

import dagster as dg

from lending_pipeline.defs.automation import (
    build_alert_sensors,
    build_drift_sensor,
    build_schedules,
)
from lending_pipeline.defs.common import in_product
from lending_pipeline.defs.evaluation import build_evaluation_assets
from lending_pipeline.defs.execution import build_executor
from lending_pipeline.defs.features import build_features_asset
from lending_pipeline.defs.freshness import with_freshness
from lending_pipeline.defs.ingestion import build_ingestion_assets
from lending_pipeline.defs.monitoring import build_monitoring_assets
from lending_pipeline.defs.packaging import build_packaging_assets
from lending_pipeline.defs.privacy import build_privacy_jobs
from lending_pipeline.defs.promotion import build_approval_job
from lending_pipeline.defs.resources import (
    PII_KEY_ENV,
    LakeStorage,
    MlflowTracking,
    PartitionedParquetIOManager,
    PiiKey,
)
from lending_pipeline.defs.served_fairness import build_served_fairness_assets
from lending_pipeline.defs.shadow import SHADOW_GROUP, build_shadow_assets
from lending_pipeline.defs.tags import tagged
from lending_pipeline.defs.training import build_training_assets
from lending_pipeline.defs.validation import build_validation_assets
from lending_pipeline.products import key_prefix, product_data_dir
from lending_pipeline.spec import PipelineSpec, load_spec, spec_path

DAILY_JOB = "daily_ingestion_job"
TRAINING_JOB = "training_job"
MONITORING_JOB = "monitoring_job"
CHALLENGER_JOB = "challenger_vintage_job"
# On every training run: the run queue allows one such run at a time (deploy/dagster.yaml).
TRAINING_TAG = "lending/training"


def build_definitions(spec: PipelineSpec) -> dg.Definitions:
    """Every definition of one pipeline spec."""
    assets = [
        *build_ingestion_assets(spec),
        *build_validation_assets(spec),
        build_features_asset(spec),
        *build_training_assets(spec),
        *build_evaluation_assets(spec),
        *build_packaging_assets(spec),
        *build_monitoring_assets(spec),
        *build_served_fairness_assets(spec),
        *build_shadow_assets(spec),
    ]
    assets = in_product(spec, with_freshness(spec, tagged(spec, assets)))
    data_dir = str(product_data_dir(spec.name) or "")  # else LENDING_DATA_DIR at run time
    daily = dg.define_asset_job(
        DAILY_JOB,
        selection=dg.AssetSelection.groups("ingestion", "validation", "features"),
        description="Ingest, validate and build the features of one day's partition.",
    )
    training = dg.define_asset_job(
        TRAINING_JOB,
        tags={TRAINING_TAG: "true"},
        selection=dg.AssetSelection.groups("training", "evaluation", "serving"),
        description=(
            "Build the training set, train, evaluate against the gates, promote, and package "
            "the new champion for serving."
        ),
    )
    monitoring = dg.define_asset_job(
        MONITORING_JOB,
        selection=dg.AssetSelection.groups("monitoring"),
        description=(
            "The drift report of one day's partition against the champion's training "
            "population, with its checks (a failure at the retrain tier triggers retraining), "
            "and the fairness of the decisions served that day."
        ),
    )
    challenger = dg.define_asset_job(
        CHALLENGER_JOB,
        selection=dg.AssetSelection.groups(SHADOW_GROUP),
        description=(
            "Realised performance of the champion and its shadow challenger on one application "
            "month of served traffic, once outcomes have matured."
        ),
    )
    return dg.Definitions(
        assets=assets,
        jobs=[
            daily,
            training,
            monitoring,
            challenger,
            *build_privacy_jobs(spec),
            build_approval_job(spec),
        ],
        schedules=build_schedules(spec, daily, monitoring, TRAINING_JOB),
        sensors=[
            build_drift_sensor(spec, TRAINING_JOB),
            *build_alert_sensors(spec),
        ],
        resources={
            "storage": LakeStorage(data_dir=data_dir),
            "pii": PiiKey(key=dg.EnvVar(PII_KEY_ENV)),
            "io_manager": PartitionedParquetIOManager(
                data_dir=data_dir, key_prefix=key_prefix(spec.name)
            ),
            "mlflow": MlflowTracking(),
        },
        executor=build_executor(),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location of the spec in force (`LENDING_PIPELINE_SPEC`)."""
    return build_definitions(load_spec())


@lru_cache(maxsize=4)
def _definitions_for(path: str, data_dir: str) -> dg.Definitions:
    return build_definitions(load_spec(path))


def daily_job() -> dg.JobDefinition:
    """The daily job of the spec in force, loadable by reference (for `dg.execute_job`)."""
    from lending_pipeline.defs.resources import resolve_data_dir

    return _definitions_for(str(spec_path()), str(resolve_data_dir())).resolve_job_def(DAILY_JOB)


def training_job() -> dg.JobDefinition:
    """The training job of the spec in force, loadable by reference (for `dg.execute_job`)."""
    from lending_pipeline.defs.resources import resolve_data_dir

    return _definitions_for(str(spec_path()), str(resolve_data_dir())).resolve_job_def(TRAINING_JOB)
