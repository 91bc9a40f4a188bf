"""Current Dagster conventions: the project loads with `dg` as the code location
`lending_pipeline`; assets carry tags and code references."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lending_pipeline.definitions import build_definitions
from lending_pipeline_tests.ui import ROOT


def test_assets_carry_domain_tier_pii_tags_and_code_references(spec, data_dir):
    specs = {s.key.to_user_string(): s for s in build_definitions(spec).resolve_all_asset_specs()}
    assert len(specs) > 10
    for name, asset in specs.items():
        assert asset.tags["domain"] == "credit_risk", name
        assert asset.tags["product"] == spec.name
        assert asset.tags["tier"] in {"bronze", "silver", "gold", "model", "monitoring"}, name
        assert asset.tags["pii"] in {"pseudonymised", "none"}, name
        references = asset.metadata["dagster/code_references"].code_references
        source = Path(references[0].file_path)
        assert source.is_relative_to(ROOT / "lending_pipeline"), (name, source)
    assert specs["raw_applications"].tags["pii"] == "pseudonymised"
    assert specs["raw_applications"].tags["tier"] == "bronze"
    assert specs["validated_applications"].tags["tier"] == "silver"
    assert specs["applicant_features"].tags == {
        **specs["applicant_features"].tags,
        "tier": "gold",
        "pii": "none",
    }
    assert specs["training_set"].tags["tier"] == "gold"


def test_dg_loads_the_project_as_the_code_location_lending_pipeline(tmp_path, data_dir):
    dg = Path(sys.executable).parent / "dg"
    if not dg.exists() and not shutil.which("dg"):
        pytest.skip("dg (dagster-dg-cli) is not installed")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "VIRTUAL_ENV": sys.prefix,
        "PYTHONPATH": str(ROOT),
    }
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    command = [str(dg if dg.exists() else shutil.which("dg")), "check", "defs"]
    checked = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    assert "superseded" not in checked.stderr
    workspace = (ROOT / "workspace.yaml").read_text()
    assert "location_name: lending_pipeline" in workspace
    assert 'code_location_name = "lending_pipeline"' in (ROOT / "pyproject.toml").read_text()
