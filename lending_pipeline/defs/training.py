"""Training: `training_set` (out-of-time split of matured applications) and `candidate_model`."""

import datetime as dt
from functools import partial

import dagster as dg
import pandas as pd

from lending_pipeline.defs.blocking import require_passed_partitions
from lending_pipeline.defs.common import (
    FEATURES,
    FRESHNESS_CHECK,
    OWNERS,
    POINT_IN_TIME_CHECK,
    blocking_check,
    daily_partitions,
    product_check,
    product_key,
    validated_key,
    validation_checks,
)
from lending_pipeline.defs.metadata import mlflow_run_metadata, rounded, runbook_metadata
from lending_pipeline.defs.resources import HAND_OVER_IN_MEMORY, MlflowTracking
from lending_pipeline.ml import tracking
from lending_pipeline.ml.evidence import split_shortfalls
from lending_pipeline.ml.scoring import REFERENCE_ARTIFACT, reference_values
from lending_pipeline.ml.sufficiency import days_problem, split_problems
from lending_pipeline.ml.train import (
    SPLIT,
    SPLITS,
    fit_candidate,
    inputs,
    labelled,
    out_of_time_split,
    split_digests,
    split_parts,
)
from lending_pipeline.spec import PipelineSpec

TRAINING_SET = dg.AssetKey("training_set")
CANDIDATE = dg.AssetKey("candidate_model")
EVIDENCE = dg.AssetCheckKey(TRAINING_SET, "training_set_enough_evidence")


class TrainingConfig(dg.Config):
    """Run-config overrides of the spec's model settings (leave empty to use the spec)."""

    as_of: str | None = None
    model_type: str | None = None
    learning_rate: float | None = None
    max_iter: int | None = None
    max_leaf_nodes: int | None = None
    min_samples_leaf: int | None = None


def with_overrides(spec: PipelineSpec, config: TrainingConfig) -> PipelineSpec:
    """The spec with the run config's model overrides applied (validated like the spec)."""
    params = dict(spec.model.params)
    for name in ("learning_rate", "max_iter", "max_leaf_nodes", "min_samples_leaf"):
        if getattr(config, name) is not None:
            params[name] = getattr(config, name)
    model = spec.model.model_dump()
    model["params"] = params
    if config.model_type:
        model["type"] = config.model_type
    data = spec.model_dump()
    data["model"] = model
    return PipelineSpec.model_validate(data)


def as_of_date(config: TrainingConfig) -> dt.date:
    return dt.date.fromisoformat(config.as_of) if config.as_of else dt.datetime.now(dt.UTC).date()


def refuse_small(rows: int, problems: list[str]) -> None:
    """Refuse a training set too small to train on meaningfully, saying what and why."""
    raise dg.Failure(
        description=(
            f"training set too small to train meaningfully ({rows} matured applications): "
            + "; ".join(problems)
        ),
        metadata={
            "problems": "\n".join(problems),
            **runbook_metadata("training_set_too_small"),
        },
    )


def build_training_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    target = spec.target.source
    input_checks = [POINT_IN_TIME_CHECK, FRESHNESS_CHECK if spec.features.freshness else None]
    input_checks = [c for c in input_checks if c] + validation_checks(spec, target)
    input_checks += [k for s in spec.feature_sources for k in validation_checks(spec, s.name)]
    input_checks = [product_check(spec, check) for check in input_checks]
    date = spec.primary_source.date_column

    @dg.asset(
        key=TRAINING_SET,
        ins={"features": dg.AssetIn(FEATURES), "outcomes": dg.AssetIn(validated_key(target))},
        group_name="training",
        kinds={"pandas"},
        owners=OWNERS,
        metadata={HAND_OVER_IN_MEMORY: True},
        check_specs=[
            blocking_check(
                EVIDENCE,
                f"The validation and test splits hold at least gates.min_split_rows "
                f"({spec.gates.min_split_rows}) rows and gates.min_split_defaults "
                f"({spec.gates.min_split_defaults}) defaults (WARN: the gates still run).",
                blocking=False,
            )
        ],
        description=(
            "Matured applications (outcome known, maturity window passed) with their label, "
            "split out of time by application date: train, validation (calibration and cutoff) "
            "and the latest days as the out-of-time test set."
        ),
    )
    def training_set(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        features: pd.DataFrame,
        outcomes: pd.DataFrame,
    ):
        days = day_strings(features[date])
        # Every day, not only those with stored features: a failed day's features are withdrawn,
        # and its absence must refuse the training set, not shrink it silently.
        every_day = sorted(set(days) | set(daily_partitions(spec).get_partition_keys()))
        require_passed_partitions(context, input_checks, every_day)
        frame = labelled(spec, features, outcomes, as_of_date(config))
        split = spec.model.split
        too_few_days = days_problem(spec, frame)
        if too_few_days:
            refuse_small(len(frame), [too_few_days])
        frame = out_of_time_split(frame, date, split.validation_days, split.test_days)
        metadata = {"rows": len(frame), "input_partitions": len(days)}
        parts = split_parts(frame)
        problems = split_problems(spec, parts)
        if problems:
            refuse_small(len(frame), problems)
        digests = split_digests(parts)
        for name, part in parts.items():
            metadata[f"{name}_rows"] = len(part)
            metadata[f"{name}_default_rate"] = round(float(part["target"].mean()), 4)
            metadata[f"{name}_dates"] = f"{part[date].min():%Y-%m-%d}..{part[date].max():%Y-%m-%d}"
            metadata[f"{name}_digest"] = digests[name]
        counts = {n: (len(p), int(p["target"].sum())) for n, p in parts.items()}
        shortfalls = split_shortfalls(spec, counts)
        for shortfall in shortfalls:
            context.log.warning(shortfall)
        yield dg.Output(frame, metadata=metadata)
        yield dg.AssetCheckResult(
            check_name=EVIDENCE.name,
            passed=not shortfalls,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(shortfalls) or "every judged split has enough rows and defaults",
            metadata={
                **{f"{n}_rows": c[0] for n, c in counts.items()},
                **{f"{n}_defaults": c[1] for n, c in counts.items()},
                "min_split_rows": spec.gates.min_split_rows,
                "min_split_defaults": spec.gates.min_split_defaults,
                **runbook_metadata(EVIDENCE.name, not shortfalls),
            },
        )

    @dg.asset(
        key=CANDIDATE,
        ins={"training_set": dg.AssetIn(TRAINING_SET)},
        group_name="training",
        kinds={"scikitlearn", "mlflow"},
        owners=OWNERS,
        description=(
            "The candidate model: the spec's pipeline fitted on train, calibrated and given its "
            "decision cutoff on validation; logged and registered in MLflow with its lineage."
        ),
    )
    def candidate_model(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        mlflow: MlflowTracking,
        training_set: pd.DataFrame,
    ) -> dg.Output:
        run_spec = with_overrides(spec, config)
        settings = mlflow.config(run_spec.name)
        closed = tracking.close_orphaned_runs(settings, partial(run_finished, context.instance))
        if closed:
            context.log.warning(f"closed MLflow runs left RUNNING by ended runs: {closed}")
        trained = fit_candidate(run_spec, training_set)
        digests = recorded_digests(context, spec, training_set)
        lineage = lineage_tags(context, run_spec, training_set, digests)
        with tracking.start_run(settings, f"{spec.name}-candidate", lineage) as run:
            import mlflow as mlflow_api

            params = {"model_type": trained.kind, "cutoff": trained.cutoff, **run_spec.model.params}
            params |= {f"monotonic.{k}": v for k, v in run_spec.model.monotonic.items()}
            params |= {"calibration": run_spec.model.calibration, "seed": run_spec.model.seed}
            mlflow_api.log_params(params)
            log_datasets(mlflow_api, training_set, date, digests)
            mlflow_api.log_dict(reference_values(run_spec, training_set), REFERENCE_ARTIFACT)
            example = inputs(run_spec, split_parts(training_set)["validation"].head(50))
            version, uri = tracking.log_model(settings, trained.model, example, lineage)
            mlflow_api.set_tag("model_version", version)
            run_id = run.info.run_id
        reference = {
            "registered_model": settings.registered_model,
            "version": version,
            "model_uri": uri,
            "run_id": run_id,
            "cutoff": trained.cutoff,
            "model_type": trained.kind,
            "spec_digest": run_spec.digest,
            "lineage": lineage,
        }
        return dg.Output(
            reference,
            metadata={
                "registered_model": settings.registered_model,
                "version": version,
                **mlflow_run_metadata(settings.tracking_uri, run_id),
                "cutoff": rounded(trained.cutoff),
                "model_type": trained.kind,
            },
        )

    return [training_set, candidate_model]


def day_strings(dates: pd.Series) -> list[str]:
    """The distinct days of a date column, oldest first (converted and formatted once per distinct
    value, not per row)."""
    days = pd.to_datetime(pd.Series(dates.unique())).dt.normalize().dropna().drop_duplicates()
    return days.sort_values().dt.strftime("%Y-%m-%d").tolist()


def recorded_digests(
    context: dg.AssetExecutionContext, spec: PipelineSpec, frame: pd.DataFrame
) -> dict[str, str]:
    """The split digests recorded with the training set's materialization (the ones its page in
    the UI shows), computed once there; computed afresh if that record is not this frame's."""
    event = context.instance.get_latest_materialization_event(product_key(spec, TRAINING_SET))
    metadata = event.asset_materialization.metadata if event else {}
    if "rows" in metadata and metadata["rows"].value == len(frame):
        return {name: metadata[f"{name}_digest"].value for name in SPLITS}
    return split_digests(split_parts(frame))


def lineage_tags(
    context: dg.AssetExecutionContext,
    spec: PipelineSpec,
    frame: pd.DataFrame,
    digests: dict[str, str],
) -> dict[str, str]:
    """Tags tying an MLflow run and model version to the data and Dagster run that made them."""
    date = spec.primary_source.date_column
    tags = {
        "dagster_run_id": context.run_id,
        "dagster_job": context.job_name,
        "spec_name": spec.name,
        "spec_digest": spec.digest,
        "code_version": code_version(),
        "partition_range": f"{frame[date].min():%Y-%m-%d}..{frame[date].max():%Y-%m-%d}",
    }
    for name in SPLITS:
        tags[f"{name}_digest"] = digests[name]
    for key, value in context.run.tags.items():
        if key.startswith("lending/"):
            tags[key.replace("/", "_")] = value
    return tags


def run_finished(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether a run of this instance has ended (a run it does not know is left alone)."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.is_finished


def log_datasets(mlflow_api, frame: pd.DataFrame, date: str, digests: dict[str, str]) -> None:
    """Record each split as an MLflow dataset input: its digest and a per-day summary."""
    days = frame[date].dt.normalize().rename(date)
    summaries = frame.groupby([frame[SPLIT], days])["target"].agg(
        applications="size", default_rate="mean"
    )
    for name in SPLITS:
        summary = summaries.loc[name].reset_index()
        summary[date] = summary[date].dt.strftime("%Y-%m-%d")
        dataset = mlflow_api.data.from_pandas(
            summary, name=f"{name}_split", digest=digests[name][:16]
        )
        mlflow_api.log_input(dataset, context=name)


def code_version() -> str:
    """The git commit of the code when run from a checkout, else the package version."""
    import subprocess
    from importlib.metadata import version
    from pathlib import Path

    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        result = None
    if result is not None and result.returncode == 0:
        return result.stdout.strip()
    return version("lending_pipeline")
