"""Shared fixtures: small generated data, a PII key, a real Dagster instance in a temp dir."""

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from lending_pipeline.ml.synth import generate_consumer_loans
from lending_pipeline.spec import PipelineSpec, load_spec
from lending_pipeline_tests.ui import ROOT

START = dt.date(2025, 3, 3)
DAYS = 3
PER_DAY = 150
AS_OF = dt.date(2025, 8, 1)
PII_KEY = "test-key-0123456789abcdef"
AUDIT_KEY = "test-audit-key-0123456789abcdef"
AUDIT_ENV = ("LENDING_AUDIT_KEY_FILE", "LENDING_AUDIT_CHECKPOINTS", "LENDING_AUDIT_URL")


def day(offset: int = 0) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


@pytest.fixture(scope="session", autouse=True)
def audit_key():
    """Every test writes audit logs under its own key, to stores in its own temp dirs (a key
    file, checkpoint file or store URL from the developer's shell is never used)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LENDING_AUDIT_KEY", AUDIT_KEY)
        for name in AUDIT_ENV:
            patch.delenv(name, raising=False)
        yield AUDIT_KEY


@pytest.fixture(scope="session")
def spec() -> PipelineSpec:
    return load_spec()


@pytest.fixture(scope="session")
def landing_template(tmp_path_factory, spec) -> Path:
    """Landing files for a few days, generated once per session."""
    root = tmp_path_factory.mktemp("template")
    generate_consumer_loans(spec, root, START, DAYS, PER_DAY, seed=11, as_of=AS_OF)
    return root


@pytest.fixture
def data_dir(tmp_path, landing_template, monkeypatch) -> Path:
    """A fresh data dir holding a copy of the template's landing files."""
    target = tmp_path / "data"
    shutil.copytree(landing_template, target)
    monkeypatch.setenv("LENDING_DATA_DIR", str(target))
    monkeypatch.setenv("LENDING_PII_KEY", PII_KEY)
    return target


@pytest.fixture
def instance(tmp_path):
    """A real Dagster instance (SQLite storage) in a temp dir."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), overrides=local_profile()) as instance:
        yield instance


def local_profile() -> dict:
    """The event log storage of the embedded profile (deploy/dagster.local.yaml)."""
    config = yaml.safe_load((ROOT / "deploy" / "dagster.local.yaml").read_text())
    return {"event_log_storage": config["event_log_storage"]}
