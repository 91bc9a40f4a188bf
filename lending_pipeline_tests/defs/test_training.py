"""Training, gated evaluation, MLflow lineage and promotion on a real instance and MLflow store."""

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from lending_pipeline.definitions import build_definitions
from lending_pipeline.defs.evaluation import CHAMPION_ASSET
from lending_pipeline.defs.training import TRAINING_SET
from lending_pipeline.ml import audit, tracking
from lending_pipeline.ml.synth import generate_consumer_loans
from lending_pipeline.runs import run_partition, run_training
from lending_pipeline.spec import default_spec_path, load_spec
from lending_pipeline_tests.conftest import PII_KEY

START = dt.date(2025, 2, 3)
DAYS = 12
AS_OF = "2025-09-01"
CONFIG = {"ops": {n: {"config": {"as_of": AS_OF}} for n in ("training_set", "candidate_model")}}


def small_spec(tmp_path, **gates):
    data = yaml.safe_load(default_spec_path().read_text())
    data["model"]["split"] = {"validation_days": 3, "test_days": 3}
    data["model"]["params"]["max_iter"] = 80
    tolerant = {"challenger_must_beat_champion": False}  # retrains on the same data tie
    data["gates"].update(
        {"min_auc_margin_over_baseline": -0.1, "max_ece": 0.1, **tolerant, **gates}
    )
    path = tmp_path / f"spec_{len(gates)}_{abs(hash(str(gates)))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    """Twelve days generated and materialized once, on one instance, for this module."""
    import dagster as dg

    root = tmp_path_factory.mktemp("training")
    data = root / "data"
    spec = load_spec()
    generate_consumer_loans(spec, data, START, DAYS, 400, seed=21, as_of=dt.date(2025, 9, 1))
    patch = pytest.MonkeyPatch()
    patch.setenv("LENDING_DATA_DIR", str(data))
    patch.setenv("LENDING_PII_KEY", PII_KEY)
    (root / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        defs = build_definitions(spec)
        for offset in range(DAYS):
            run = run_partition(defs, instance, (START + dt.timedelta(days=offset)).isoformat())
            assert run.success, run.messages
        yield data, instance
    patch.undo()


@pytest.fixture
def workspace(materialized, tmp_path, monkeypatch):
    """A private copy of the data dir (own MLflow store and history); the shared instance."""
    data, instance = materialized
    target = tmp_path / "data"
    shutil.copytree(data, target, ignore=shutil.ignore_patterns("mlflow", "registry"))
    monkeypatch.setenv("LENDING_DATA_DIR", str(target))
    monkeypatch.setenv("LENDING_PII_KEY", PII_KEY)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return target, instance


def train(spec, instance):
    return run_training(build_definitions(spec), instance, CONFIG)


def settings(spec, data_dir):
    from lending_pipeline.defs.resources import MlflowTracking

    return MlflowTracking().config(spec.name)


def test_passing_gates_promote_and_keep_previous(tmp_path, workspace):
    data_dir, instance = workspace
    spec = small_spec(tmp_path)
    first = train(spec, instance)
    assert first.success, [e.description for e in first.get_asset_check_evaluations()]
    config = settings(spec, data_dir)
    assert tracking.alias_version(config, tracking.CHAMPION) == "1"
    assert tracking.alias_version(config, tracking.PREVIOUS) is None

    second = train(spec, instance)
    assert second.success
    assert tracking.alias_version(config, tracking.CHAMPION) == "2"
    assert tracking.alias_version(config, tracking.PREVIOUS) == "1"
    history = tracking.read_history(data_dir / "registry" / "promotions.jsonl")
    assert [(h["version"], h["previous_version"]) for h in history] == [("1", None), ("2", "1")]
    assert history[1]["dagster_run_id"] == second.run_id
    assert history[1]["metrics"]["roc_auc"] > 0.7
    audited = audit.verify_store(data_dir)  # both promotions audited, the last one checkpointed
    assert audited.ok and audited.entries >= 2 and audited.anchored_to == audited.entries - 1


def test_failing_gate_changes_nothing(tmp_path, workspace):
    data_dir, instance = workspace
    good = small_spec(tmp_path)
    assert train(good, instance).success
    config = settings(good, data_dir)
    history = data_dir / "registry" / "promotions.jsonl"
    before = history.read_bytes()

    strict = small_spec(tmp_path, min_roc_auc=0.99)
    result = train(strict, instance)
    assert not result.success
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == ["model_evaluation_min_roc_auc"]
    assert tracking.alias_version(config, tracking.CHAMPION) == "1"
    assert history.read_bytes() == before
    assert not any(
        e.is_step_materialization and e.step_key == CHAMPION_ASSET.path[-1]
        for e in result.all_events
    )

    alone = (
        build_definitions(strict)
        .resolve_job_def("training_job")
        .execute_in_process(
            instance=instance, asset_selection=[CHAMPION_ASSET], raise_on_error=False
        )
    )
    assert not alone.success
    message = next(e for e in alone.all_events if e.is_step_failure)
    assert "model_evaluation_min_roc_auc" in message.step_failure_data.user_failure_data.description
    assert tracking.alias_version(config, tracking.CHAMPION) == "1"


def test_same_data_and_spec_give_the_same_metrics(tmp_path, workspace):
    _, instance = workspace
    spec = small_spec(tmp_path)
    runs = [train(spec, instance) for _ in range(2)]
    metrics = [
        {e.check_name: e.description for e in run.get_asset_check_evaluations()} for run in runs
    ]
    drop = "model_evaluation_max_auc_drop_vs_champion"
    assert "no champion yet" in metrics[0].pop(drop)
    assert "actual 0.0000 <= 0.01" in metrics[1].pop(drop)  # the retrained model equals v1
    gain = "model_evaluation_min_auc_gain_over_champion"
    assert "no champion yet" in metrics[0].pop(gain)
    assert "not required" in metrics[1].pop(gain)  # small_spec lets a tie through
    assert metrics[0] == metrics[1]
    assert any("min_roc_auc: passed (actual 0." in d for d in metrics[0].values())


def test_lineage_on_run_and_model_version(tmp_path, workspace):
    from mlflow import MlflowClient

    data_dir, instance = workspace
    spec = small_spec(tmp_path)
    result = train(spec, instance)
    config = settings(spec, data_dir)
    tags = tracking.version_tags(config, "1")
    for key in (
        "dagster_run_id",
        "spec_digest",
        "code_version",
        "partition_range",
        "train_digest",
        "validation_digest",
        "test_digest",
    ):
        assert tags.get(key), key
    assert tags["dagster_run_id"] == result.run_id
    assert tags["spec_digest"] == spec.digest
    training_set = instance.get_latest_materialization_event(TRAINING_SET).asset_materialization
    for split in ("train", "validation", "test"):  # the digests the training set's page shows
        assert tags[f"{split}_digest"] == training_set.metadata[f"{split}_digest"].value
    assert tags["partition_range"].startswith("2025-02-03..")
    client = MlflowClient(tracking_uri=config.tracking_uri)
    version = client.get_model_version(config.registered_model, "1")
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.params["model_type"] == "hist_gradient_boosting"
    assert "oot_candidate_roc_auc" in run.data.metrics
    assert "oot_baseline_roc_auc" in run.data.metrics
    contexts = {t.value for d in run.inputs.dataset_inputs for t in d.tags}
    assert {"train", "validation", "test"} <= contexts
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "model_card.md" in artifacts and "evaluation" in artifacts
    card = client.download_artifacts(run.info.run_id, "model_card.md", str(tmp_path))
    text = Path(card).read_text()
    assert "## Gates" in text and "min_adverse_impact_ratio" in text and result.run_id in text
    logged = mlflow_model_signature(config)
    assert "debt_to_income" in logged and "full_name" not in logged


def mlflow_model_signature(config) -> str:
    import mlflow

    mlflow.set_tracking_uri(config.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{config.registered_model}/1")
    return str(info.signature)


def test_training_set_refuses_partitions_whose_checks_failed(tmp_path, workspace):
    from lending_pipeline.ml import corrupt
    from lending_pipeline.ml.synth import partition_path

    data_dir, instance = workspace
    spec = small_spec(tmp_path)
    day = (START + dt.timedelta(days=4)).isoformat()
    path = partition_path(data_dir, spec.source_by_name["bureau"], day)
    original = path.read_bytes()
    corrupt.out_of_range(path, "tradeline_count")
    defs = build_definitions(spec)
    try:
        assert not run_partition(defs, instance, day).success
        refused = train(spec, instance)
        assert not refused.success
        failure = next(e for e in refused.all_events if e.is_step_failure)
        message = failure.step_failure_data.user_failure_data.description
        assert f"{day}: validated_bureau_schema" in message
        assert "training_set" in message
    finally:
        path.write_bytes(original)
        assert run_partition(defs, instance, day).success


def test_evaluation_shows_its_plots_numbers_and_mlflow_run(tmp_path, workspace, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("LENDING_MLFLOW_PORT", "5999")
    data_dir, instance = workspace
    spec = small_spec(tmp_path)
    assert train(spec, instance).success
    record = instance.fetch_materializations(dg.AssetKey("model_evaluation"), limit=1).records[0]
    metadata = record.asset_materialization.metadata
    plots = metadata["plots"].value
    assert plots.count("](data:image/png;base64,") == 4
    for name in ("roc", "calibration", "pd_by_outcome", "approval_by_group"):
        assert (data_dir / "reports" / "evaluation" / "v1" / f"{name}.png").stat().st_size > 5_000
    auc = metadata["roc_auc"].value
    assert isinstance(auc, float) and auc == round(auc, 4)
    rates = {k: v.value for k, v in metadata.items() if k.startswith("approval_rate.")}
    assert rates and all(0 <= v <= 1 for v in rates.values())
    run_id = metadata["mlflow_run_id"].value
    config = settings(spec, data_dir)
    run = MlflowClient(tracking_uri=config.tracking_uri).get_run(run_id)
    link = f"http://127.0.0.1:5999/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    assert metadata["mlflow_run"].value == link
    artifacts = MlflowClient(tracking_uri=config.tracking_uri).list_artifacts(run_id, "plots")
    assert {a.path for a in artifacts} == {
        "plots/roc.png",
        "plots/calibration.png",
        "plots/pd_by_outcome.png",
        "plots/approval_by_group.png",
    }
