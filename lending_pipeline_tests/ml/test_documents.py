"""Per-version documents: the SR 11-7 validation report and Annex IV mapping built from the
artefacts, the CycloneDX SBOM, and the check that blocks packaging on outdated documents."""

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from mlflow import MlflowClient

from lending_pipeline.ml import documents
from lending_pipeline.ml.evaluate import (
    evaluate_gates,
    gate_intervals,
    gates_as_dicts,
    model_card,
    report,
    validator_figures,
)
from lending_pipeline.spec import PipelineSpec, default_spec_path


def evaluated(spec, n=1500, seed=0, signal=0.35):
    """An evaluation as `model_evaluation` builds it, on generated rows with ids."""
    rng = np.random.default_rng(seed)
    target = (rng.random(n) < 0.15).astype(int)
    frame = pd.DataFrame(
        {
            "application_id": [f"APP-{seed}-{i:05d}" for i in range(n)],
            "target": target,
            "age_band": rng.choice(["18-24", "25-34", "35-44"], n),
            "sex": rng.choice(["F", "M"], n),
            "loan_amount": rng.uniform(1000, 20000, n),
        }
    )
    frame.loc[:4, "age_band"] = "65+"  # a group too small to gate
    prob = np.clip(0.1 + signal * target + rng.normal(0, 0.12, n), 0.001, 0.999)
    probs = {"candidate": prob, "baseline": np.clip(prob + rng.normal(0, 0.1, n), 0, 1)}
    reports = {r: report(spec, frame, p, 0.3) for r, p in probs.items()} | {"champion": None}
    intervals = gate_intervals(spec, frame, probs, 0.3, reports)
    gates = evaluate_gates(spec.gates, reports["candidate"], reports["baseline"], None, intervals)
    figures = validator_figures(spec, frame, probs, reports["candidate"])
    evaluation = {
        "version": "7",
        "run_id": "run-abc",
        "cutoff": 0.3,
        "reports": reports,
        "gates": gates_as_dicts(gates),
        "intervals": {k: v.as_dict() for k, v in intervals.items()},
        "validator_figures": figures,
    }
    lineage = {"partition_range": "2025-01-01..2025-03-01", "test_digest": "f" * 64}
    candidate = {"model_type": "hist_gradient_boosting", "lineage": lineage}
    card = model_card(spec, "7", lineage, reports, gates, 0.3, intervals, figures)
    return frame, evaluation, candidate, card


def with_origin(spec, kind, description=""):
    data = spec.model_dump()
    data["data_origin"] = {"kind": kind, "description": description}
    return PipelineSpec.model_validate(data)


def test_validation_report_follows_sr_11_7_from_the_artefacts(spec):
    frame, evaluation, candidate, _ = evaluated(spec)
    text = documents.validation_report(spec, evaluation, candidate, "2026-01-01T00:00:00+00:00")
    sections = [
        "## 2. Conceptual soundness",
        "## 3. Outcome analysis",
        "## 4. Ongoing monitoring",
        "## 5. Limitations",
    ]
    positions = [text.index(s) for s in sections]
    assert positions == sorted(positions)
    assert text.startswith("# Validation report: consumer_loan model version 7")
    auc = evaluation["reports"]["candidate"]["roc_auc"]
    assert f"| roc_auc | {auc:.4f} | 90% interval [" in text
    assert "Source `bureau` (csv" in text and "Data kind: synthetic" in text
    assert f"PSI warn {spec.drift.psi_warn:g}" in text
    assert "min_auc_gain_over_champion" in text and "## 6. Conclusion" in text
    assert not [i for i in frame["application_id"] if i in text]  # aggregates only


def test_statements_follow_the_spec_not_a_fixed_sentence(spec):
    _, evaluation, candidate, _ = evaluated(spec)
    public = with_origin(spec, "public", "German credit data, 1,000 loans from 1973-75")
    text = documents.validation_report(public, evaluation, candidate, "t")
    assert "Data kind: public" in text and "German credit data" in text
    assert "Synthetic data" not in text
    undeclared = with_origin(spec, "unspecified")
    annex = documents.annex_iv(undeclared, evaluation, candidate, "t")
    assert "does not declare what the data is" in annex
    assert "| 2(d) |" in annex and "| partly |" in annex.split("| 2(d) |")[1].split("\n")[0]
    card = model_card(public, "7", {}, evaluation["reports"], [], 0.3)
    assert "Data kind: public" in card and "Synthetic data" not in card


def test_annex_iv_maps_every_point(spec):
    _, evaluation, candidate, _ = evaluated(spec)
    text = documents.annex_iv(spec, evaluation, candidate, "t")
    for point, _ in documents.ANNEX_IV:
        assert f"| {point} |" in text
    assert "run `run-abc`" in text and "not provided" in text


def test_small_split_and_small_groups_are_named_as_limitations(spec):
    _, evaluation, candidate, _ = evaluated(spec, n=300, signal=0.1)
    text = documents.validation_report(spec, evaluation, candidate, "t")
    limitations = text.split("## 5. Limitations")[1]
    assert "below the spec's minimum (1000 / 100)" in limitations
    assert "wide: the test split cannot tell apart" in limitations
    assert "Groups of age_band below min_group_size 30 were not gated: 65+." in limitations
    _, big, candidate, _ = evaluated(spec, n=4000)
    roomy = documents.validation_report(spec, big, candidate, "t").split("## 5. Limitations")[1]
    assert "below the spec's minimum" not in roomy and "wide: the test split" not in roomy


CREATED = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def fresh(version="7", at=CREATED + dt.timedelta(minutes=1)):
    texts = {path: f"text of {path}" for path in documents.DESCRIBED}
    return documents.manifest(version, at.isoformat(), texts), texts


def test_outdated_documents_are_named():
    manifest, texts = fresh()
    assert documents.outdated("7", CREATED, manifest, texts) == []
    assert documents.outdated("7", CREATED, None, dict.fromkeys(texts)) == []  # never evaluated
    assert "without documents/manifest.json" in documents.outdated("7", CREATED, None, texts)[0]
    other, _ = fresh(version="6")
    assert documents.outdated("7", CREATED, other, texts) == [
        "documents describe model version 6, not 7"
    ]
    old, _ = fresh(at=CREATED - dt.timedelta(days=1))
    (problem,) = documents.outdated("7", CREATED, old, texts)
    assert "are older than model version 7" in problem
    edited = dict(texts, **{documents.CARD: "a better-looking card"})
    assert documents.outdated("7", CREATED, manifest, edited) == [
        "model_card.md was changed after it was generated"
    ]


def test_sbom_is_valid_cyclonedx_with_the_installed_distributions():
    text = documents.bento_sbom(
        "consumer_loan_scoring:v3-abc", "consumer_loan_model:v3", "3", "c" * 64, ["pandas==2.3.3"]
    )
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    by_name = {c["name"].lower(): c for c in bom["components"]}
    from importlib.metadata import version

    assert by_name["pandas"]["version"] == version("pandas")
    assert by_name["numpy"]["purl"] == f"pkg:pypi/numpy@{version('numpy')}"  # pulled in by pandas
    assert by_name["consumer_loan_model"]["type"] == "machine-learning-model"
    assert bom["metadata"]["component"]["version"] == "v3-abc"
    graph = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    refs = {c["bom-ref"] for c in bom["components"]} | {"bento:consumer_loan_scoring:v3-abc"}
    assert all(ref in refs for needed in graph.values() for ref in needed)
    assert by_name["pandas"]["bom-ref"] in graph["bento:consumer_loan_scoring:v3-abc"]
    assert by_name["numpy"]["bom-ref"] in graph[by_name["pandas"]["bom-ref"]]


def test_sbom_lists_a_shadow_challenger_model():
    text = documents.bento_sbom(
        "s:v3-c2-abc", "m:v3", "3", "c" * 64, ["orjson"], shadow=("m:v2", "2")
    )
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    models = {
        c["bom-ref"]: c
        for c in json.loads(text)["components"]
        if c["type"] == "machine-learning-model"
    }
    assert (
        set(models) == {"model:m:v3", "model:m:v2"}
        and "shadow" in models["model:m:v2"]["description"]
    )


def test_bento_requirements_are_read_from_the_built_bento(tmp_path):
    folder = tmp_path / "env" / "python"
    folder.mkdir(parents=True)
    (folder / "requirements.txt").write_text("# pinned\nnumpy==2.4.6\n-e .\norjson==3.11\n")
    assert documents.bento_requirements(tmp_path, ["x"]) == ["numpy==2.4.6", "orjson==3.11"]
    assert documents.bento_requirements(tmp_path / "missing", ["x"]) == ["x"]


@pytest.fixture
def registry(tmp_path):
    """A SQLite MLflow store with one registered version whose run holds the documents."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_text("x", "model/placeholder.txt")
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("consumer_loan")
    source = f"runs:/{run.info.run_id}/model"
    version = client.create_model_version("consumer_loan", source, run_id=run.info.run_id)
    return client, run.info.run_id, str(version.version), uri


def log_documents(run_id, version, at=None, **replace):
    import mlflow

    at = at or documents.now()
    texts = {path: f"{path} of version {version}" for path in documents.DESCRIBED}
    manifest = documents.manifest(version, at, texts)
    with mlflow.start_run(run_id=run_id):
        for path, text in (texts | replace).items():
            mlflow.log_text(text, path)
        mlflow.log_dict(manifest, documents.MANIFEST)


def test_check_reads_the_documents_of_the_version_run(registry):
    client, run_id, version, _ = registry
    documents.check_version_documents(client, "consumer_loan", version)  # none yet: gates decide
    log_documents(run_id, version)
    documents.check_version_documents(client, "consumer_loan", version)
    log_documents(run_id, version, **{documents.REPORT: "a report edited by hand"})
    with pytest.raises(documents.DocumentsOutdated, match="validation_report.md was changed"):
        documents.check_version_documents(client, "consumer_loan", version)


def test_packaging_refuses_a_card_older_than_its_model(registry, tmp_path):
    client, run_id, version, uri = registry
    log_documents(run_id, version, at="2020-01-01T00:00:00+00:00")
    command = [
        sys.executable,
        "-m",
        "lending_pipeline.serving.package",
        "--spec",
        str(default_spec_path()),
        "--tracking-uri",
        uri,
        "--registered-model",
        "consumer_loan",
        "--version",
        version,
    ]
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    import os

    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )
    assert result.returncode != 0
    assert "model version 1 cannot be packaged" in result.stderr
    assert "are older than model version 1" in result.stderr
    assert not (tmp_path / "bentoml" / "bentos").exists()
