"""Privacy jobs: re-key the warehouse after a key rotation, erase an applicant on request.

Both call `ml.rekey` / `ml.erasure`; their metadata holds counts and key ids, never values.
"""

import dagster as dg

from lending_pipeline.defs.metadata import runbook_metadata
from lending_pipeline.defs.resources import PII_KEY_ENV, LakeStorage, PiiKey
from lending_pipeline.ml import audit, data_keys
from lending_pipeline.ml.erasure import ErasureError, erase_applicant
from lending_pipeline.ml.pii import PiiKeyError
from lending_pipeline.ml.rekey import RekeyError, rekey_warehouse
from lending_pipeline.products import product_data_dir
from lending_pipeline.spec import PipelineSpec

REKEY_JOB = "privacy_rekey_job"
ERASE_JOB = "privacy_erase_job"
REKEYED = "pii_rekey"  # audit entry kind: the warehouse lifted to a key id
RESULT_IO = "privacy_result_io"  # op results are counts kept in memory, not warehouse files


class ErasureRequest(dg.Config):
    """Who is erased (the entity key's value), who asks, and why (no personal data here: the
    reason is kept in the audit log)."""

    applicant: str
    by: str
    reason: str


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
        runbook = runbook_metadata("privacy_rekey")
        try:
            keyring = pii.keyring()
            store = audit.open_store(storage.path)  # refuse to start without the audit key
        except (PiiKeyError, audit.AuditKeyError, audit.AuditStoreError) as exc:
            raise dg.Failure(str(exc), metadata=runbook) from None
        try:
            report = rekey_warehouse(storage.path, spec, keyring)
            summary = report.summary()
            store.append(REKEYED, [{**summary, "run_id": context.run_id}])
            store.checkpoint_head()
        except (RekeyError, audit.AuditUnavailable) as exc:
            raise dg.Failure(str(exc), metadata=runbook) from None
        finally:
            store.close()
        context.add_output_metadata({**summary, **runbook})
        if report.problems:
            raise dg.Failure(
                f"{len(report.problems)} file(s) not re-keyed: " + "; ".join(report.problems[:10]),
                metadata={**summary, **runbook},
            )
        return summary

    @dg.job(
        name=REKEY_JOB,
        description="Re-key the warehouse's pseudonyms to the active key after a rotation.",
        tags={"kind": "privacy"},
        resource_defs=_resources(spec),
    )
    def rekey_job():
        rekey_warehouse_files()

    @dg.op(
        out=dg.Out(dict, io_manager_key=RESULT_IO),
        description=(
            "Remove the applicant's rows from the landing files and the warehouse, record the "
            "erasure in the audit log, destroy the applicant's data keys (their audited inputs "
            "become unreadable; the chain still verifies)."
        ),
    )
    def erase_applicant_data(
        context: dg.OpExecutionContext, config: ErasureRequest, storage: LakeStorage
    ) -> dict:
        runbook = runbook_metadata("privacy_erasure")
        data_dir = storage.path
        try:
            key = audit.audit_key()
            store = audit.open_store(data_dir, key=key)
            keys = data_keys.open_store(data_dir)
        except (audit.AuditKeyError, audit.AuditStoreError) as exc:
            raise dg.Failure(str(exc), metadata=runbook) from None
        try:
            report = erase_applicant(
                spec, data_dir, config.applicant, config.by, config.reason, store, keys, key
            )
        except (ErasureError, audit.AuditUnavailable, data_keys.DataKeyError) as exc:
            raise dg.Failure(str(exc), metadata=runbook) from None
        finally:
            keys.close()
            store.close()
        summary = report.summary()
        context.add_output_metadata({**summary, **runbook})
        return summary

    @dg.job(
        name=ERASE_JOB,
        description="Erase one applicant on request (admin): rows removed, data keys destroyed.",
        tags={"kind": "privacy"},
        resource_defs=_resources(spec),
    )
    def erase_job():
        erase_applicant_data()

    return [rekey_job, erase_job]


def _resources(spec: PipelineSpec) -> dict:
    """The jobs' own resources: data dir, key(s), and op results kept in memory."""
    return {
        "storage": LakeStorage(data_dir=str(product_data_dir(spec.name) or "")),
        "pii": PiiKey(key=dg.EnvVar(PII_KEY_ENV)),
        RESULT_IO: dg.mem_io_manager,
    }
