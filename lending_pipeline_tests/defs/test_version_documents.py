"""The training job end to end: intervals on the gate checks, the validator's card sections, the
per-version documents on the MLflow run and in the UI metadata, the SBOM of the Bento, a
challenger that only ties the champion refused, and edited documents blocking packaging."""

import json

import pandas as pd
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from mlflow import MlflowClient

from lending_pipeline.defs.evaluation import EVALUATION
from lending_pipeline.ml import documents, tracking
from lending_pipeline.serving.package import package_version
from lending_pipeline.spec import default_spec_path
from lending_pipeline_tests.defs import test_training as training

materialized = training.materialized  # the training module's fixtures, shared here
workspace = training.workspace
settings, small_spec, train = training.settings, training.small_spec, training.train


def artifact(client, run_id, path) -> str:
    return documents._artifact_text(client, run_id, path)


def test_trained_version_carries_its_documents(tmp_path, workspace):
    data_dir, instance = workspace
    spec = small_spec(tmp_path)
    result = train(spec, instance)
    assert result.success, [e.description for e in result.get_asset_check_evaluations()]
    config = settings(spec, data_dir)
    client = MlflowClient(tracking_uri=config.tracking_uri)
    run_id = tracking.version_run(config, "1").info.run_id

    gates = {e.check_name: e for e in result.get_asset_check_evaluations()}
    auc = gates["model_evaluation_min_roc_auc"].metadata
    assert auc["interval_low"].value < auc["actual"].value < auc["interval_high"].value
    assert auc["judged_on"].value == "estimate"
    assert {"model_evaluation_min_brier_skill", "model_evaluation_max_tpr_difference"} <= set(gates)

    report = artifact(client, run_id, documents.REPORT)
    annex = artifact(client, run_id, documents.ANNEX)
    card = artifact(client, run_id, documents.CARD)
    manifest = json.loads(artifact(client, run_id, documents.MANIFEST))
    assert report.startswith(f"# Validation report: {spec.name} model version 1")
    assert "## 4. Ongoing monitoring" in report and "| 2(g) |" in annex
    assert "## Uncertainty" in card and "## Compared at the same approval rate" in card
    assert manifest["model_version"] == "1"
    assert manifest["documents"][documents.CARD] == documents.sha256(card)
    documents.check_version_documents(client, config.registered_model, "1")

    sbom = artifact(client, run_id, documents.SBOM)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom) is None
    names = {c["name"].lower() for c in json.loads(sbom)["components"]}
    assert {"bentoml", "scikit-learn", "mlflow", "lending_pipeline"} <= names

    event = instance.get_latest_materialization_event(EVALUATION)
    metadata = event.asset_materialization.metadata
    assert metadata["validation_report"].value == report
    folder = data_dir / "reports" / "documents" / "v1"
    assert metadata["documents"].value == str(folder)
    assert (folder / "sbom.cdx.json").exists() and (folder / "validation_report.md").exists()

    raw = pd.concat(pd.read_csv(p, dtype=str) for p in data_dir.glob("landing/applications/*"))
    personal = set(raw["application_id"]) | set(raw["full_name"]) | set(raw["ssn"])
    text = " ".join(p.read_text() for p in folder.iterdir())
    assert not [v for v in personal if v in text]

    tie = train(small_spec(tmp_path, challenger_must_beat_champion=True), instance)
    failed = [e.check_name for e in tie.get_asset_check_evaluations() if not e.passed]
    assert failed == ["model_evaluation_min_auc_gain_over_champion"]
    assert tracking.alias_version(config, tracking.CHAMPION) == "1"

    import mlflow

    mlflow.set_tracking_uri(config.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text(card + "\nReviewed: all clear.\n", documents.CARD)
    with pytest.raises(documents.DocumentsOutdated, match="model_card.md was changed"):
        documents.check_version_documents(client, config.registered_model, "1")
    with pytest.raises(RuntimeError, match="model version 1 cannot be packaged"):
        package_version(
            default_spec_path(), config.tracking_uri, config.registered_model, "1", data_dir
        )
