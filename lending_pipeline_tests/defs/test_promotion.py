"""Doors around the gates, each walked through and refused: packaging, forcing, approving,
promoting and rolling back a version that did not pass every gate for itself."""

import json

import dagster as dg
import pytest
import yaml

from lending_pipeline.cli import main
from lending_pipeline.definitions import build_definitions
from lending_pipeline.defs.blocking import failed_checks
from lending_pipeline.defs.evaluation import gate_checks
from lending_pipeline.defs.promotion import APPROVE_JOB, check_problems
from lending_pipeline.ml import audit, promotion, tracking
from lending_pipeline.runs import run_training
from lending_pipeline.serving.auth import new_token
from lending_pipeline.serving.operations import RollbackError, rollback
from lending_pipeline.spec import default_spec_path, load_spec
from lending_pipeline_tests.defs import test_training as training
from lending_pipeline_tests.defs.test_training import CONFIG, settings, train

materialized = training.materialized  # the module's fixtures: twelve materialized days
workspace = training.workspace


def spec_file(tmp_path, approval="automatic", **gates):
    data = yaml.safe_load(default_spec_path().read_text())
    data["model"]["split"] = {"validation_days": 3, "test_days": 3}
    data["model"]["params"]["max_iter"] = 80
    data["gates"].update(
        {
            "min_auc_margin_over_baseline": -0.1,
            "max_ece": 0.1,
            "challenger_must_beat_champion": False,  # retrained on the same days: a tie
            **gates,
        }
    )
    data["promotion"] = {"approval": approval}
    path = tmp_path / f"spec_{approval}_{abs(hash(str(gates)))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, load_spec(path)


def train_only(spec, instance):
    return run_training(build_definitions(spec), instance, CONFIG, package=False)


def audit_kinds(data_dir) -> list[tuple[str, dict]]:
    reader = audit.open_reader(data_dir, None)
    try:
        return [(e.kind, e.data) for e in reader.entries()]
    finally:
        reader.close()


@pytest.fixture
def tokens(monkeypatch):
    admin, admin_line = new_token("risk-ops", "admin")
    scorer, scorer_line = new_token("loan-origination", "scorer")
    monkeypatch.setenv("LENDING_API_TOKENS", f"{admin_line};{scorer_line}")
    monkeypatch.delenv("LENDING_API_TOKENS_FILE", raising=False)
    monkeypatch.delenv("LENDING_ADMIN_TOKEN", raising=False)
    return {"admin": admin, "scorer": scorer}


def test_a_version_that_failed_a_gate_is_not_packaged_and_force_is_audited(
    tmp_path, workspace, tokens, monkeypatch, capsys
):
    data_dir, instance = workspace
    good_path, good = spec_file(tmp_path)
    assert train_only(good, instance).success
    strict_path, strict = spec_file(tmp_path, min_roc_auc=0.99)
    assert not train_only(strict, instance).success
    config = settings(good, data_dir)
    assert promotion.gate_record(config, "1")["gates"]["min_roc_auc"] is True
    assert promotion.gate_record(config, "2")["gates"]["min_roc_auc"] is False
    assert tracking.version_tags(config, "2")["gate.min_roc_auc"] == "fail"

    assert main(["package", "--spec", str(good_path), "--version", "2"]) == 1
    assert "gate min_roc_auc FAILED" in capsys.readouterr().err
    refused = [p for kind, p in audit_kinds(data_dir) if kind == "refused"]
    assert refused[-1]["version"] == "2" and refused[-1]["action"] == "deploy"

    # nor may it score in the champion's shadow
    assert main(["challenger", "set", "2", "--spec", str(good_path), "--reason", "try it"]) == 1
    assert "refusing to score in the shadow model version 2" in capsys.readouterr().err
    assert tracking.alias_version(config, tracking.CHALLENGER) is None
    refused = [p for kind, p in audit_kinds(data_dir) if kind == "refused"]
    assert refused[-1]["version"] == "2" and refused[-1]["action"] == "challenger"

    # --force needs a reason and an admin's token; a scorer's token is not enough
    assert main(["package", "--spec", str(good_path), "--version", "2", "--force"]) == 2
    args = ["package", "--spec", str(good_path), "--version", "2", "--force", "--reason", "P1"]
    assert main(args) == 2
    monkeypatch.setenv("LENDING_ADMIN_TOKEN", tokens["scorer"])
    assert main(args) == 2
    assert "not the token of an admin" in capsys.readouterr().err
    monkeypatch.setenv("LENDING_ADMIN_TOKEN", tokens["admin"])
    assert main(args) == 0
    assert "FORCED" in capsys.readouterr().out
    forced = [p for kind, p in audit_kinds(data_dir) if kind == "forced_deploy"]
    assert len(forced) == 1 and "gate min_roc_auc FAILED" in forced[0].pop("overridden")
    assert forced == [
        {
            "event": "forced_deploy",
            "registered_model": config.registered_model,
            "version": "2",
            "by": "risk-ops",
            "reason": "P1",
        }
    ]
    history = tracking.read_history(data_dir / "registry" / "promotions.jsonl")
    assert history[-1]["event"] == "forced_deploy" and history[-1]["by"] == "risk-ops"
    assert audit.verify_store(data_dir).ok


def test_a_never_evaluated_version_is_refused_naming_the_missing_record(
    tmp_path, workspace, capsys
):
    data_dir, instance = workspace
    path, spec = spec_file(tmp_path)
    job = build_definitions(spec).resolve_job_def("training_job")
    trained_only = [dg.AssetKey("training_set"), dg.AssetKey("candidate_model")]
    result = job.execute_in_process(
        instance=instance, run_config=CONFIG, asset_selection=trained_only, raise_on_error=False
    )
    assert result.success
    assert main(["package", "--spec", str(path), "--version", "1"]) == 1
    assert "has no gate record: it was never evaluated" in capsys.readouterr().err


def test_a_failed_fairness_gate_can_be_neither_forced_nor_approved(
    tmp_path, workspace, tokens, monkeypatch, capsys
):
    data_dir, instance = workspace
    path, unfair = spec_file(tmp_path, approval="required", min_adverse_impact_ratio=0.999)
    result = train_only(unfair, instance)
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == ["model_evaluation_min_adverse_impact_ratio"]
    monkeypatch.setenv("LENDING_ADMIN_TOKEN", tokens["admin"])
    args = ["package", "--spec", str(path), "--version", "1", "--force", "--reason", "urgent"]
    assert main(args) == 1
    assert "fairness gate min_adverse_impact_ratio FAILED" in capsys.readouterr().err
    assert main(["approve", "1", "--by", "alice", "--reason", "ok", "--spec", str(path)]) == 1
    assert "no approval or --force can override a fairness gate" in capsys.readouterr().err
    config = settings(unfair, data_dir)
    assert tracking.alias_version(config, tracking.CHAMPION) is None
    assert not [k for k, _ in audit_kinds(data_dir) if k in ("forced_deploy", "approval")]


def test_required_approval_holds_the_version_until_a_person_signs_off(tmp_path, workspace, capsys):
    data_dir, instance = workspace
    path, spec = spec_file(tmp_path, approval="required")
    result = train(spec, instance)  # with packaging: nothing is packaged while pending
    assert result.success
    config = settings(spec, data_dir)
    assert tracking.alias_version(config, tracking.CHAMPION) is None
    assert promotion.approval(config, "1")["status"] == "pending"
    assert not (data_dir / "serving" / "deployments.json").exists()
    assert main(["package", "--spec", str(path), "--version", "1"]) == 1
    assert "awaits approval" in capsys.readouterr().err
    history = data_dir / "registry" / "promotions.jsonl"
    assert tracking.read_history(history)[-1]["event"] == "approval_pending"

    # the approval is written to the audit log before the alias moves: no log, no move
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    unwritable = pytest.MonkeyPatch()
    unwritable.setenv("LENDING_AUDIT_URL", f"sqlite:///{blocker}/audit.db")
    try:
        with pytest.raises(OSError):
            promotion.approve_version(config, history, data_dir, "1", "alice", "reviewed")
    finally:
        unwritable.undo()
    assert tracking.alias_version(config, tracking.CHAMPION) is None
    assert promotion.approval(config, "1")["status"] == "pending"

    assert main(["approve", "1", "--by", "alice", "--reason", "validation report read"]) == 0
    assert tracking.alias_version(config, tracking.CHAMPION) == "1"
    approvals = [p for k, p in audit_kinds(data_dir) if k == "approval"]
    assert approvals[-1]["by"] == "alice" and approvals[-1]["version"] == "1"
    assert approvals[-1]["reason"] == "validation report read"
    assert tracking.read_history(history)[-1]["event"] == "promotion"
    assert main(["approve", "1", "--by", "alice", "--reason", "again"]) == 1
    assert "already approved" in capsys.readouterr().err

    # the UI's way: the approval job, launched with config
    assert train_only(spec, instance).success
    assert tracking.alias_version(config, tracking.CHAMPION) == "1"
    # while it waits, the pending version is scored in the champion's shadow
    assert tracking.alias_version(config, tracking.CHALLENGER) == "2"
    assert tracking.read_history(history)[-1]["challenger"] == "2"
    job = build_definitions(spec).resolve_job_def(APPROVE_JOB)
    run_config = {
        "ops": {"approve_model_version": {"config": {"version": "2", "by": "bob", "reason": "ok"}}}
    }
    assert job.execute_in_process(instance=instance, run_config=run_config).success
    assert tracking.alias_version(config, tracking.CHAMPION) == "2"
    assert tracking.alias_version(config, tracking.PREVIOUS) == "1"
    assert [p["by"] for k, p in audit_kinds(data_dir) if k == "approval"] == ["alice", "bob"]
    assert tracking.alias_version(config, tracking.CHALLENGER) is None  # it is the champion now
    cited = [p["shadow_record"] for k, p in audit_kinds(data_dir) if k == "approval"]
    assert cited[-1] == {"requests": 0}  # nothing was served here: the record says so


def test_a_stale_gate_pass_does_not_count(tmp_path, workspace):
    data_dir, instance = workspace
    _, spec = spec_file(tmp_path)
    assert train_only(spec, instance).success
    evaluation = instance.get_latest_materialization_event(gate_checks()[0].asset_key)
    digest = evaluation.asset_materialization.metadata["oot_digest"].value
    checks = gate_checks()
    assert check_problems(instance, checks, "1", digest) == []
    # the checks' latest results passed, but for version 1: they say nothing about version 2
    assert failed_checks(instance, checks, None) == []
    stale = check_problems(instance, checks, "2", digest)
    assert len(stale) == len(checks)
    assert "latest result is for version 1, not 2 (stale)" in stale[0]
    other_set = check_problems(instance, checks, "1", "another digest")
    assert all("another out-of-time set" in p for p in other_set)
    assert promotion.gate_problems(None, "2") == [
        "version 2 has no gate record: it was never evaluated"
    ]
    # version 1 re-evaluated elsewhere and failed: its record says so, and the Dagster checks'
    # earlier pass no longer counts; champion_model refuses, naming the gate
    config = settings(spec, data_dir)
    record = promotion.gate_record(config, "1")
    failed = {**record["gates"], "max_ece": False}
    promotion.record_gates(config, "1", failed, record["oot_digest"], "another evaluation")
    history = data_dir / "registry" / "promotions.jsonl"
    promotions = len(tracking.read_history(history))
    alone = (
        build_definitions(spec)
        .resolve_job_def("training_job")
        .execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("champion_model")],
            raise_on_error=False,
        )
    )
    assert not alone.success
    failure = next(e for e in alone.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "refusing to promote model version 1: gate max_ece FAILED" in message
    assert len(tracking.read_history(history)) == promotions  # no promotion recorded


def test_rollback_to_a_version_that_never_passed_is_refused(tmp_path, workspace):
    data_dir, instance = workspace
    _, good = spec_file(tmp_path)
    assert train_only(good, instance).success
    _, strict = spec_file(tmp_path, min_roc_auc=0.99)
    assert not train_only(strict, instance).success
    config = settings(good, data_dir)
    tracking.promote(config, "2")  # aliases moved by hand, around the pipeline
    tracking.promote(config, "1")
    assert tracking.alias_version(config, tracking.PREVIOUS) == "2"
    history = data_dir / "registry" / "promotions.jsonl"
    with pytest.raises(RollbackError, match="gate min_roc_auc FAILED"):
        rollback(good, config, history, data_dir, actor="on-call")
    assert tracking.alias_version(config, tracking.CHAMPION) == "1"
    refused = [p for k, p in audit_kinds(data_dir) if k == "refused"]
    assert refused[-1]["action"] == "rollback" and refused[-1]["by"] == "on-call"
    assert json.dumps(refused[-1]).count("min_roc_auc") == 1
