"""`lending-pipeline privacy ...` and `lending-pipeline erase`: key rotation and erasure, run as
Dagster jobs on the instance (`DAGSTER_HOME`), so each run shows in the UI."""

from __future__ import annotations

import json
import os
import sys


def _definitions(args):
    from lending_pipeline.definitions import build_definitions
    from lending_pipeline.defs.resources import resolve_data_dir
    from lending_pipeline.spec import load_spec

    os.environ["LENDING_DATA_DIR"] = str(resolve_data_dir(getattr(args, "data_dir", None)))
    return build_definitions(load_spec(args.spec))


def _instance():
    from lending_pipeline.cli import _instance as dagster_instance  # the CLI's, not a copy

    return dagster_instance()


def _run(args, job_name: str, op_name: str, config: dict | None = None):
    """Run a privacy job in this process; its op's output, or None (the failure printed)."""
    job = _definitions(args).resolve_job_def(job_name)
    run_config = {"ops": {op_name: {"config": config}}} if config else {}
    result = job.execute_in_process(
        instance=_instance(), run_config=run_config, raise_on_error=False
    )
    if result.success:
        return result.output_for_node(op_name)
    for event in result.all_events:
        if event.is_step_failure:
            failure = event.step_failure_data.user_failure_data
            text = failure.description if failure else event.step_failure_data.error.message
            print(f"{job_name} failed (run {result.run_id}): {text}", file=sys.stderr)
    return None


def cmd_keys(args) -> int:
    """The keyring in force: ids, generations, the active key (no secrets)."""
    from lending_pipeline.ml import keyring

    try:
        ring = keyring.load()
    except keyring.PiiKeyError as exc:
        print(f"privacy keys: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(ring.describe(), indent=2))
    return 0


def cmd_rekey(args) -> int:
    from lending_pipeline.defs.privacy import REKEY_JOB

    summary = _run(args, REKEY_JOB, "rekey_warehouse_files")
    if summary is None:
        return 1
    print(
        f"warehouse re-keyed to {summary['key_id']}: {summary['files_rewritten']} of "
        f"{summary['files_checked']} files with PII columns rewritten, "
        f"{summary['values_rekeyed']} values"
    )
    return 0


def add_commands(sub) -> None:
    privacy = sub.add_parser("privacy", help="pseudonymisation keys: list, re-key the warehouse")
    privacy_sub = privacy.add_subparsers(dest="privacy_command", required=True)
    keys = privacy_sub.add_parser("keys", help="the keyring in force (ids, no secrets)")
    keys.set_defaults(func=cmd_keys)
    rekey = privacy_sub.add_parser(
        "rekey", help="lift the warehouse's pseudonyms to the active key (a Dagster run)"
    )
    rekey.add_argument("--spec", default=None, help="spec YAML (default: the one in force)")
    rekey.add_argument("--data-dir", default=None)
    rekey.set_defaults(func=cmd_rekey)
    erase = sub.add_parser(
        "erase", help="erase an applicant on request (admin; a Dagster run, audited)"
    )
    erase.add_argument(
        "--applicant", required=True, help="the entity key's value, e.g. the application id"
    )
    erase.add_argument(
        "--reason", required=True, help="why (kept in the audit log; no personal data)"
    )
    erase.add_argument("--by", default=None, help="the administrator asking (default: $USER)")
    erase.add_argument("--spec", default=None, help="spec YAML (default: the one in force)")
    erase.add_argument("--data-dir", default=None)
    erase.set_defaults(func=cmd_erase)


def cmd_erase(args) -> int:
    """Erase one applicant (admin): rows removed, erasure audited, data keys destroyed."""
    from lending_pipeline.defs.privacy import ERASE_JOB

    by = args.by or os.environ.get("USER") or ""
    config = {"applicant": args.applicant, "by": f"{by} (CLI)", "reason": args.reason}
    summary = _run(args, ERASE_JOB, "erase_applicant_data", config)
    if summary is None:
        return 1
    print(
        f"applicant erased (audit entry {summary['audit_seq']}, ref "
        f"{summary['applicant_ref'][:16]}...): {summary['data_keys_destroyed']} data key(s) "
        f"destroyed, {summary['landing_rows_removed']} landing and "
        f"{summary['warehouse_rows_removed']} warehouse row(s) removed"
    )
    return 0
