"""Operations on the served model: package and deploy a version, roll back to the previous one.

Both refuse a version that has not passed every gate for itself (and, under
`promotion.approval: required`, a version nobody approved), naming the gate; the refusal is
audited. An administrator's `Force` deploys past failed or missing gates (never a failed
fairness gate), recorded in the audit log and the promotion history. Both leave a trace: the
deployment record's history, and for a rollback the promotion history and the audit log as well.
"""

from __future__ import annotations

import fcntl
import getpass
import os
from pathlib import Path

import yaml

from lending_pipeline.ml import audit, promotion, tracking
from lending_pipeline.serving.bundle import Bundle
from lending_pipeline.serving.deploy import gave_up, read_record, request_deploy
from lending_pipeline.serving.package import package_version
from lending_pipeline.spec import PipelineSpec


def spec_file(spec: PipelineSpec, data_dir: Path) -> Path:
    """The spec in force, written out for packaging (named by its digest)."""
    path = data_dir / "serving" / "specs" / f"{spec.name}-{spec.digest[:12]}.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), "utf-8")
    return path


def _actor(actor: str | None = None) -> str:
    return (actor or os.environ.get("USER") or getpass.getuser())[:300]


def approval_required(spec: PipelineSpec) -> bool:
    return spec.promotion.approval == "required"


def deploy_version(
    spec: PipelineSpec,
    config: tracking.TrackingConfig,
    version: str,
    data_dir: Path,
    reason: str,
    force: promotion.Force | None = None,
    actor: str | None = None,
) -> Bundle:
    """Build (or reuse) the Bento of a model version (with the registry's challenger in its
    shadow, when the spec asks for one) and make it the desired deployment; refused
    (`promotion.PromotionRefused`, audited) unless every gate passed for this version and, when
    the spec requires it, it was approved; `force` is audited and recorded."""
    version = str(version)
    actor = force.admin if force else _actor(actor)
    try:
        overridden = promotion.require_deployable(
            config, version, approval_required(spec), force, action="deploy"
        )
    except promotion.PromotionRefused as refusal:
        promotion.record_refusal(data_dir, refusal, "deploy", version, actor)
        raise
    if force is not None:
        entry = {
            "event": "forced_deploy",
            "registered_model": config.registered_model,
            "version": version,
            "by": force.admin,
            "reason": force.reason[:1000],
            "overridden": overridden,
        }
        seq = promotion.audit_event(data_dir, "forced_deploy", entry)
        tracking.append_history(tracking.history_path(data_dir), {**entry, "audit_seq": seq})
    bundle = package_version(
        spec_file(spec, data_dir),
        config.tracking_uri,
        config.registered_model,
        version,
        data_dir,
        shadow_version(spec, config, version),
    )
    request_deploy(data_dir, bundle.bento_tag, version, reason)
    return bundle


def shadow_version(
    spec: PipelineSpec, config: tracking.TrackingConfig, champion: str
) -> str | None:
    """The version to score in the champion's shadow: the registry's `challenger`, unless the
    spec turns shadow scoring off or it is the champion itself."""
    if not spec.scoring.shadow:
        return None
    challenger = tracking.alias_version(config, tracking.CHALLENGER)
    return challenger if challenger not in (None, champion) else None


class RollbackError(RuntimeError):
    """A rollback that cannot be done (e.g. there is no previous version)."""


def rollback(
    spec: PipelineSpec,
    config: tracking.TrackingConfig,
    history: Path,
    data_dir: Path,
    actor: str | None = None,
    to_version: str | None = None,
) -> dict:
    """Swap the `champion` and `previous` aliases, record it everywhere, deploy the new champion.

    Running it again undoes it (the aliases swap back). With `to_version` it is idempotent:
    nothing moves when that version is already the champion and served or its deploy is under
    way; when it is the champion but another version is served and its deploy failed or was
    never requested, its deploy is requested again (`redeploy`). It refuses when that
    version is not the previous one. Rollbacks are serialised by a lock file; the audit entry is
    written before the aliases move, so no rollback goes unaudited.
    """
    actor = _actor(actor)
    history.parent.mkdir(parents=True, exist_ok=True)
    with open(history.with_name(".rollback.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        champion = tracking.alias_version(config, tracking.CHAMPION)
        previous = tracking.alias_version(config, tracking.PREVIOUS)
        if to_version is not None and champion == to_version:
            record = read_record(data_dir)
            served = (record.get("active") or {}).get("model_version")
            desired = record.get("desired") or {}
            pending = not gave_up(record["history"], signature=desired.get("signature"))
            if served == champion or (desired.get("model_version") == champion and pending):
                return {"event": "rollback", "to_version": champion, "by": actor, "noop": True}
            try:
                bundle = deploy_version(
                    spec, config, champion, data_dir, f"redeploy of the champion by {actor}"
                )
            except promotion.PromotionRefused as refusal:
                raise RollbackError(str(refusal)) from None
            return {
                "event": "redeploy",
                "from_version": served,
                "to_version": champion,
                "by": actor,
                "bento_tag": bundle.bento_tag,
            }
        if champion is None or previous is None or to_version not in (None, previous):
            raise RollbackError(
                f"cannot roll back to {to_version or 'the previous version'}: champion is "
                f"{champion or 'unset'}, previous is {previous or 'unset'}"
            )
        try:
            promotion.require_deployable(
                config, previous, approval_required(spec), action="roll back to"
            )
        except promotion.PromotionRefused as refusal:
            promotion.record_refusal(data_dir, refusal, "rollback", previous, actor)
            raise RollbackError(str(refusal)) from None
        entry = {
            "event": "rollback",
            "from_version": champion,
            "to_version": previous,
            "registered_model": config.registered_model,
            "by": actor,
        }
        store = audit.open_store(data_dir)
        try:
            store.append("rollback", [entry])
            store.checkpoint_head()
        finally:
            store.close()
        tracking.promote(config, previous)
        tracking.append_history(
            history, {**entry, "version": previous, "previous_version": champion}
        )
    bundle = deploy_version(spec, config, previous, data_dir, reason=f"rollback by {actor}")
    return {**entry, "bento_tag": bundle.bento_tag}


def set_challenger(
    spec: PipelineSpec,
    config: tracking.TrackingConfig,
    history: Path,
    data_dir: Path,
    version: str | None,
    actor: str,
    reason: str,
) -> Bundle | None:
    """Name (or, with None, clear) the version scored in the champion's shadow: audited, in the
    promotion history, then the champion's Bento rebuilt with it and deployed. Refuses the
    champion itself, a version the registry does not hold and one that did not pass every gate
    for itself (a refusal is audited)."""
    champion = tracking.alias_version(config, tracking.CHAMPION)
    if version is not None:
        if version == champion:
            raise RollbackError(f"version {version} is the champion: it cannot be its own shadow")
        try:
            tracking.version_tags(config, version)
        except Exception:
            raise RollbackError(f"model version {version} is not in the registry") from None
        try:
            promotion.require_deployable(config, version, action="score in the shadow")
        except promotion.PromotionRefused as refusal:
            promotion.record_refusal(data_dir, refusal, "challenger", version, actor)
            raise RollbackError(str(refusal)) from None
    entry = {
        "event": "challenger_set" if version else "challenger_cleared",
        "version": version,
        "registered_model": config.registered_model,
        "by": actor[:300],
        "reason": reason[:500],
    }
    store = audit.open_store(data_dir)
    try:
        store.append("challenger", [entry])
    finally:
        store.close()
    tracking.set_challenger(config, version)
    tracking.append_history(history, entry)
    if champion is None or not spec.scoring.shadow:
        return None
    return deploy_version(spec, config, champion, data_dir, reason=f"challenger by {actor}")


def active_version(data_dir: Path) -> str | None:
    active = read_record(data_dir).get("active")
    return active["model_version"] if active else None
