"""What may be put in front of applicants: gate records bound to a model version, sign-off.

The evaluation writes, on the registered model version itself (MLflow model version tags), the
result of every gate it judged for *that* version and the digest of the out-of-time set it was
judged on (`record_gates`), sealed with an HMAC under the audit key (registry tags can be set by
anyone with registry access; an unsealed or edited record counts as no pass). Promotion,
packaging and rollback read it back (`require_deployable`) and refuse a version with a failed or
missing gate, naming the gate. A re-evaluation of the same version replaces its record; an
evaluation of another version never counts for this one.

When the spec says `promotion.approval: required`, a version that passed every gate waits as
"pending" until a person approves it (`approve`), recorded with who, when and why.

`--force` lets an administrator deploy past a failed or missing gate in an emergency; it is
never allowed past a failed fairness gate, and the caller records it in the audit log and the
promotion history.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from lending_pipeline.ml import tracking

RECORD_TAG = "gates.record"
RECORD_MAC_TAG = "gates.record_mac"
STATUS_TAG = "gates.status"
GATE_PREFIX = "gate."
APPROVAL_TAG = "approval.status"
APPROVAL_DETAIL_TAG = "approval.record"
APPROVAL_MAC_TAG = "approval.mac"
INTEGRITY_GATE = "integrity"
FAIRNESS_GATES = ("min_adverse_impact_ratio", "max_tpr_difference")
PENDING, APPROVED = "pending", "approved"


class PromotionRefused(RuntimeError):
    """A version that may not be promoted, approved or deployed (the message names why)."""


@dataclass(frozen=True)
class Force:
    """An administrator's emergency override of failed or missing gates (never fairness)."""

    admin: str
    reason: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def seal(kind: str, record: dict) -> str:
    """HMAC-SHA256 of a record under the audit key (`LENDING_AUDIT_KEY`), bound to its kind:
    registry tags are writable by anyone with registry access; a record without a valid seal
    was not written by the pipeline."""
    from lending_pipeline.ml import audit

    message = f"{kind}\n{json.dumps(record, sort_keys=True)}".encode()
    return hmac.new(audit.audit_key(), message, hashlib.sha256).hexdigest()


def _sealed(kind: str, record: dict, mac: str | None) -> str | None:
    """Why a record's seal does not hold (None when it does)."""
    from lending_pipeline.ml import audit

    try:
        expected = seal(kind, record)
    except audit.AuditKeyError as exc:
        return f"cannot be verified ({exc})"
    if not mac or not hmac.compare_digest(mac, expected):
        return "does not verify under the audit key (written outside the pipeline, or edited)"
    return None


def required_gates() -> list[str]:
    """Every gate a version must pass: the spec's gates and the integrity check."""
    from lending_pipeline.ml.evaluate import GATES

    return [*GATES, INTEGRITY_GATE]


def record_gates(
    config: tracking.TrackingConfig,
    version: str,
    passed: dict[str, bool],
    oot_digest: str,
    evaluated_by: str,
) -> dict:
    """Write the gate results judged for `version` on its registry entry; returns the record."""
    from mlflow import MlflowClient

    record = {
        "version": str(version),
        "oot_digest": oot_digest,
        "evaluated_by": evaluated_by,
        "evaluated_at": _now(),
        "gates": {name: bool(ok) for name, ok in passed.items()},
    }
    client = MlflowClient(tracking_uri=config.tracking_uri)
    name = config.registered_model
    for gate, ok in record["gates"].items():
        verdict = "pass" if ok else "fail"
        client.set_model_version_tag(name, version, f"{GATE_PREFIX}{gate}", verdict)
    missing = [g for g in required_gates() if g not in record["gates"]]
    status = "passed" if all(record["gates"].values()) and not missing else "failed"
    client.set_model_version_tag(name, version, STATUS_TAG, status)
    client.set_model_version_tag(name, version, RECORD_TAG, json.dumps(record, sort_keys=True))
    client.set_model_version_tag(name, version, RECORD_MAC_TAG, seal("gates", record))
    return record


def gate_record(config: tracking.TrackingConfig, version: str) -> dict | None:
    """The gate record of a version, or None when it was never evaluated (or does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = tracking.version_tags(config, version)
    except MlflowException:
        return None
    text = tags.get(RECORD_TAG)
    if not text:
        return None
    record = json.loads(text)
    if str(record.get("version")) != str(version):  # a record copied from another version
        return None
    broken = _sealed("gates", record, tags.get(RECORD_MAC_TAG))
    return {**record, "unverified": broken} if broken else record


def gate_problems(record: dict | None, version: str) -> list[str]:
    """Why `version` has not passed every gate (empty when it has)."""
    if record is None:
        return [f"version {version} has no gate record: it was never evaluated"]
    if record.get("unverified"):
        return [f"the gate record of version {version} {record['unverified']}"]
    gates = record["gates"]
    problems = [f"gate {g} FAILED" for g in required_gates() if gates.get(g) is False]
    problems += [f"gate {g} has no result" for g in required_gates() if g not in gates]
    return problems


def failed_fairness(record: dict | None) -> list[str]:
    """The fairness gates a version failed (these can never be approved or forced)."""
    if record is None:
        return []
    return [g for g in FAIRNESS_GATES if record["gates"].get(g) is False]


def approval(config: tracking.TrackingConfig, version: str) -> dict | None:
    """The sign-off state of a version: {"status": pending|approved, ...}, or None."""
    tags = tracking.version_tags(config, version)
    status = tags.get(APPROVAL_TAG)
    if status is None:
        return None
    if status != APPROVED:
        return {"status": status}
    detail = json.loads(tags.get(APPROVAL_DETAIL_TAG) or "{}")
    broken = _sealed("approval", detail, tags.get(APPROVAL_MAC_TAG))
    if broken or str(detail.get("version")) != str(version):
        return {**detail, "status": "unverified", "why": broken or "approval of another version"}
    return {**detail, "status": status}


def mark_pending(config: tracking.TrackingConfig, version: str) -> None:
    """A version that passed every gate now waits for a person's approval."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=config.tracking_uri)
    client.set_model_version_tag(config.registered_model, version, APPROVAL_TAG, PENDING)


def record_approval(config: tracking.TrackingConfig, version: str, by: str, reason: str) -> dict:
    """Mark a version approved by a person (call after the audit entry is written)."""
    from mlflow import MlflowClient

    detail = {"version": str(version), "by": by, "reason": reason, "at": _now()}
    client = MlflowClient(tracking_uri=config.tracking_uri)
    name = config.registered_model
    client.set_model_version_tag(name, version, APPROVAL_DETAIL_TAG, json.dumps(detail))
    client.set_model_version_tag(name, version, APPROVAL_MAC_TAG, seal("approval", detail))
    client.set_model_version_tag(name, version, APPROVAL_TAG, APPROVED)
    return {**detail, "status": APPROVED}


def require_deployable(
    config: tracking.TrackingConfig,
    version: str,
    approval_required: bool = False,
    force: Force | None = None,
    action: str = "deploy",
) -> list[str]:
    """Refuse (`PromotionRefused`, naming the gate or the missing approval) unless `version`
    passed every gate and, when required, was approved. With `force`, failed or missing gates
    and a missing approval are let through and returned (for the audit entry); a failed
    fairness gate, or a gate record that does not verify, never is."""
    record = gate_record(config, version)
    fairness = failed_fairness(record)
    if fairness:
        raise PromotionRefused(
            f"refusing to {action} model version {version}: fairness gate "
            f"{', '.join(fairness)} FAILED; no approval or --force can override a fairness gate"
        )
    problems = gate_problems(record, version)
    if record is not None and record.get("unverified"):  # it may hide a failed fairness gate
        raise PromotionRefused(
            f"refusing to {action} model version {version}: {problems[0]}; no approval or "
            "--force goes past a record that does not verify: re-evaluate the version"
        )
    if approval_required and not problems:
        state = approval(config, version)
        if state is None or state["status"] != APPROVED:
            problems.append(
                f"version {version} awaits approval (promotion.approval: required): "
                f"lending-pipeline approve {version} --by NAME --reason TEXT"
            )
    if problems and force is None:
        why = "; ".join(problems)
        raise PromotionRefused(f"refusing to {action} model version {version}: {why}")
    return problems


def audit_event(data_dir: Path, kind: str, entry: dict) -> int:
    """Append one governance event to the audit log and checkpoint its head; returns its seq."""
    from lending_pipeline.ml import audit

    store = audit.open_store(data_dir)
    try:
        (written,) = store.append(kind, [entry])
        store.checkpoint_head()
    finally:
        store.close()
    return written.seq


def record_refusal(
    data_dir: Path, refusal: PromotionRefused, action: str, version: str, by: str
) -> None:
    """Record a refused attempt in the audit log (best effort: the refusal stands even when the
    log cannot be written)."""
    from lending_pipeline.ml import audit

    entry = {"action": action, "version": str(version), "by": by[:300], "why": str(refusal)}
    unwritable = (audit.AuditKeyError, audit.AuditStoreError, audit.AuditUnavailable, OSError)
    with contextlib.suppress(*unwritable):
        audit_event(data_dir, "refused", entry)


def shadow_evidence(config: tracking.TrackingConfig, data_dir: Path, version: str) -> dict:
    """The version's record in the champion's shadow, cited by its approval and logged to its
    MLflow run (`shadow_record.md`) beside its model card."""
    from lending_pipeline.ml import audit
    from lending_pipeline.ml.shadow_record import evidence, evidence_markdown

    try:
        reader = audit.open_reader(data_dir)
    except audit.AuditStoreError:
        return {"requests": 0}
    try:
        record = evidence(reader.entries(), version)
    finally:
        reader.close()
    run_id = tracking.version_run(config, version).info.run_id
    with tracking.resume_run(config, run_id) as mlflow_api:
        mlflow_api.log_text(evidence_markdown(version, record), "shadow_record.md")
    return record


def approve_version(
    config: tracking.TrackingConfig,
    history: Path,
    data_dir: Path,
    version: str,
    by: str,
    reason: str,
    channel: str = "cli",
) -> dict:
    """A person's sign-off of a pending version: refused unless it passed every gate (a failed
    fairness gate can never be approved); the approval is written to the audit log first, then
    to the registry, and only then does the `champion` alias move."""
    version = str(version)
    by, reason = by.strip()[:300], reason.strip()[:1000]
    try:
        if not by or not reason:
            raise PromotionRefused("an approval names who approves (--by) and why (--reason)")
        require_deployable(config, version, action="approve")
        state = approval(config, version)
        if state is None or state["status"] != PENDING:
            approved = state is not None and state["status"] == APPROVED
            current = "already approved" if approved else "not waiting for approval"
            raise PromotionRefused(
                f"refusing to approve model version {version}: it is {current} "
                "(only a version that passed every gate under promotion.approval: required "
                "waits for sign-off)"
            )
    except PromotionRefused as refusal:
        record_refusal(data_dir, refusal, "approve", version, by)
        raise
    champion = tracking.alias_version(config, tracking.CHAMPION)
    entry = {
        "event": "approval",
        "registered_model": config.registered_model,
        "version": version,
        "previous_version": champion,
        "by": by,
        "reason": reason,
        "channel": channel,
        "shadow_record": shadow_evidence(config, data_dir, version),
    }
    seq = audit_event(data_dir, "approval", entry)
    record_approval(config, version, by, reason)
    old = tracking.promote(config, version)
    if tracking.alias_version(config, tracking.CHALLENGER) == version:
        tracking.set_challenger(config, None)  # the shadow's candidate is the champion now
    tracking.append_history(history, {**entry, "event": "promotion", "audit_seq": seq})
    return {**entry, "previous_version": old, "audit_seq": seq}
