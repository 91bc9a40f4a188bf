"""The integrity check re-scores from the registry; gate records are bound to their version."""

import json

import pytest

from lending_pipeline.ml import promotion, tracking
from lending_pipeline.ml.gating import (
    evaluation_reports,
    fingerprint_differences,
    judge_version,
    rescore_differences,
    stored_rows,
)
from lending_pipeline.ml.train import split_parts
from lending_pipeline_tests.ml.test_scoring import fitted  # noqa: F401 (fixture)
from lending_pipeline_tests.serving.conftest import register


@pytest.fixture(scope="module")
def registered(tmp_path_factory, spec, fitted):  # noqa: F811
    """Two versions registered (and judged) in a fresh SQLite MLflow store under a temp dir."""
    from lending_pipeline.defs.resources import MlflowTracking

    patch = pytest.MonkeyPatch()
    patch.setenv("LENDING_DATA_DIR", str(tmp_path_factory.mktemp("registry")))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = MlflowTracking().config(spec.name)
    _, _, split = fitted
    first, trained = register(spec, config, split)
    second, _ = register(spec, config, split, seed=11, params={"max_iter": 60})
    yield config, split, first, second, trained
    patch.undo()


def test_rescoring_catches_a_registered_model_that_is_not_the_one_judged(spec, registered):
    config, split, first, second, trained = registered
    parts = split_parts(split)
    test = parts["test"].reset_index(drop=True)
    reports, prob = evaluation_reports(
        spec, parts["train"], test, trained.cutoff, tracking.load_model(config, first)
    )
    stored = stored_rows(spec, test, prob)
    assert "full_name" not in stored.columns and "prob" in stored.columns
    same = tracking.load_model(config, first)
    assert rescore_differences(spec, same, stored, reports["candidate"], trained.cutoff) == {}
    other = tracking.load_model(config, second)  # what the registry would hand out if swapped
    differences = rescore_differences(spec, other, stored, reports["candidate"], trained.cutoff)
    assert "roc_auc" in differences and "max_probability_change" in differences
    # fingerprints: the run's configuration and the version's tags
    assert fingerprint_differences(config, first, {"cutoff": trained.cutoff}) == {}
    changed = fingerprint_differences(config, first, {"cutoff": trained.cutoff + 0.01})
    assert list(changed) == ["cutoff"]
    assert fingerprint_differences(config, first, {"spec_digest": spec.digest}) == {
        "spec_digest": (None, spec.digest)
    }


def test_a_gate_record_names_its_version_and_set(spec, registered):
    config, split, version, _, trained = registered
    record = promotion.gate_record(config, version)
    assert record["version"] == version and len(record["oot_digest"]) == 64
    assert set(record["gates"]) == set(promotion.required_gates())
    assert promotion.require_deployable(config, version) == []
    with pytest.raises(promotion.PromotionRefused, match="awaits approval"):
        promotion.require_deployable(config, version, approval_required=True)
    strict = spec.model_copy(update={"gates": spec.gates.model_copy(update={"min_ks": 0.99})})
    gates, _, record = judge_version(strict, config, version, split, trained.cutoff, "test")
    assert record["gates"]["min_ks"] is False  # a re-evaluation replaces the record
    with pytest.raises(promotion.PromotionRefused, match="gate min_ks FAILED"):
        promotion.require_deployable(config, version)
    overridden = promotion.require_deployable(
        config, version, force=promotion.Force("risk-ops", "incident 42")
    )
    assert overridden == ["gate min_ks FAILED"]
    judge_version(spec, config, version, split, trained.cutoff, "test")  # passes again
    assert promotion.require_deployable(config, version) == []


def test_gate_records_and_approvals_written_outside_the_pipeline_do_not_count(spec, registered):
    """Registry tags can be set by anyone with registry access: a forged or edited record, or
    a forged approval, does not verify under the audit key and counts as no pass."""
    from mlflow import MlflowClient

    config, _, first, second, _ = registered
    client = MlflowClient(tracking_uri=config.tracking_uri)
    tags = tracking.version_tags(config, second)
    record = json.loads(tags[promotion.RECORD_TAG])
    edited = {**record, "evaluated_by": "someone else"}
    client.set_model_version_tag(
        config.registered_model, second, promotion.RECORD_TAG, json.dumps(edited)
    )
    with pytest.raises(promotion.PromotionRefused, match="does not verify under the audit key"):
        promotion.require_deployable(config, second)
    with pytest.raises(promotion.PromotionRefused, match="no approval or --force goes past"):
        promotion.require_deployable(config, second, force=promotion.Force("risk-ops", "P1"))
    client.set_model_version_tag(
        config.registered_model, second, promotion.RECORD_TAG, tags[promotion.RECORD_TAG]
    )
    assert promotion.require_deployable(config, second) == []

    # an approval set by hand is not one; a real one (sealed) is
    client.set_model_version_tag(config.registered_model, first, promotion.APPROVAL_TAG, "approved")
    assert promotion.approval(config, first)["status"] == "unverified"
    with pytest.raises(promotion.PromotionRefused, match="awaits approval"):
        promotion.require_deployable(config, first, approval_required=True)
    promotion.record_approval(config, first, "alice", "model card reviewed")
    assert promotion.require_deployable(config, first, approval_required=True) == []
    detail = json.loads(tracking.version_tags(config, first)[promotion.APPROVAL_DETAIL_TAG])
    client.set_model_version_tag(  # the approval moved to another version
        config.registered_model,
        second,
        promotion.APPROVAL_DETAIL_TAG,
        json.dumps(detail),
    )
    client.set_model_version_tag(
        config.registered_model,
        second,
        promotion.APPROVAL_MAC_TAG,
        tracking.version_tags(config, first)[promotion.APPROVAL_MAC_TAG],
    )
    client.set_model_version_tag(
        config.registered_model, second, promotion.APPROVAL_TAG, "approved"
    )
    assert promotion.approval(config, second)["status"] == "unverified"
