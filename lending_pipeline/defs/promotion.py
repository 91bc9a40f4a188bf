"""Promotion bound to the version: gate results read for the candidate itself, and the
human sign-off job (`approve_model_job`)."""

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from lending_pipeline.defs.metadata import runbook_url
from lending_pipeline.defs.resources import MlflowTracking, spec_data_dir
from lending_pipeline.ml import promotion
from lending_pipeline.spec import PipelineSpec

APPROVE_JOB = "approve_model_job"
FINAL = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}


def check_problems(
    instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey], version: str, digest: str
) -> list[str]:
    """Why the latest result of each gate check does not show a pass for `version` judged on
    the out-of-time set `digest` (a pass for another version, or another set, is stale)."""
    problems = []
    for key in check_keys:
        history = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=1, status=FINAL
        )
        evaluation = history[0].evaluation if history else None
        if evaluation is None:
            problems.append(f"{key.name} has no result")
            continue
        metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        judged = metadata.get("candidate_version")
        if str(judged) != str(version):
            problems.append(
                f"{key.name}: its latest result is for version {judged or 'unknown'}, "
                f"not {version} (stale)"
            )
        elif metadata.get("oot_digest") != digest:
            problems.append(f"{key.name}: judged on another out-of-time set (stale)")
        elif not evaluation.passed:
            problems.append(f"{key.name} FAILED")
    return problems


def require_gates_for_version(
    context: dg.AssetExecutionContext,
    check_keys: list[dg.AssetCheckKey],
    version: str,
    digest: str,
) -> None:
    """Raise a Failure naming the gate unless every gate check passed for this very version."""
    problems = check_problems(context.instance, check_keys, version, digest)
    if problems:
        raise dg.Failure(
            description=(
                f"refusing to promote model version {version}: {'; '.join(problems)}. "
                "Evaluate this version (materialize model_evaluation with its checks) first."
            ),
            metadata={"version": version, "runbook": runbook_url("model_evaluation_gates")},
        )


class ApprovalConfig(dg.Config):
    """Who signs off which version, and why (recorded in the audit log)."""

    version: str
    by: str
    reason: str


def build_approval_job(spec: PipelineSpec) -> dg.JobDefinition:
    """A job launched from the UI with config: the human sign-off of a pending version."""

    @dg.op(
        name="approve_model_version",
        description=(
            "Approve a model version that passed every gate and waits for sign-off: recorded "
            "in the audit log (who, what, when, why), then the `champion` alias moves."
        ),
    )
    def approve_model_version(
        context: dg.OpExecutionContext, config: ApprovalConfig, mlflow: MlflowTracking
    ) -> None:
        try:
            done = promotion.approve_version(
                mlflow.config(spec.name),
                mlflow.history_path(spec.name),
                spec_data_dir(spec.name),
                config.version,
                config.by,
                config.reason,
                channel=f"dagster run {context.run_id}",
            )
        except promotion.PromotionRefused as exc:
            raise dg.Failure(description=str(exc)) from None
        context.log.info(
            f"version {config.version} approved by {config.by}; champion moved "
            f"(previous: {done['previous_version'] or 'none'}; audit entry {done['audit_seq']})"
        )

    @dg.job(name=APPROVE_JOB, description="Human sign-off of a pending model version.")
    def approve_model_job():
        approve_model_version()

    return approve_model_job
