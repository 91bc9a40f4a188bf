"""Privacy jobs: re-key the warehouse after a key rotation, erase an applicant on request.

Both call `ml.rekey` / `ml.erasure`; their metadata holds counts and key ids, never values.
"""

import dagster as dg

from lending_pipeline.defs.metadata import runbook_url
from lending_pipeline.defs.resources import PII_KEY_ENV, LakeStorage, PiiKey
from lending_pipeline.ml.rekey import RekeyError, rekey_warehouse
from lending_pipeline.spec import PipelineSpec

REKEY_JOB = "privacy_rekey_job"
RESULT_IO = "privacy_result_io"  # op results are counts kept in memory, not warehouse files


def build_privacy_jobs(spec: PipelineSpec) -> list[dg.JobDefinition]:
    @dg.op(
        out=dg.Out(dict, io_manager_key=RESULT_IO),
        description=(
            "Lift every pseudonym in the warehouse to the active pseudonymisation key "
            "(`LENDING_PII_KEYRING`): joins across a key rotation keep working."
        ),
    )
    def rekey_warehouse_files(
        context: dg.OpExecutionContext, storage: LakeStorage, pii: PiiKey
    ) -> dict:
        try:
            report = rekey_warehouse(storage.path, spec, pii.keyring())
        except RekeyError as exc:
            raise dg.Failure(str(exc), metadata={"runbook": runbook_url("privacy_rekey")}) from None
        summary = report.summary()
        context.add_output_metadata({**summary, "runbook": runbook_url("privacy_rekey")})
        if report.problems:
            raise dg.Failure(
                f"{len(report.problems)} file(s) not re-keyed: " + "; ".join(report.problems[:10]),
                metadata={**summary, "runbook": runbook_url("privacy_rekey")},
            )
        return summary

    @dg.job(
        name=REKEY_JOB,
        description="Re-key the warehouse's pseudonyms to the active key after a rotation.",
        tags={"kind": "privacy"},
        resource_defs=_resources(),
    )
    def rekey_job():
        rekey_warehouse_files()

    return [rekey_job]


def _resources() -> dict:
    """The jobs' own resources: data dir, key(s), and op results kept in memory."""
    return {
        "storage": LakeStorage(),
        "pii": PiiKey(key=dg.EnvVar(PII_KEY_ENV)),
        RESULT_IO: dg.mem_io_manager,
    }
