import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from lending_pipeline.definitions import DAILY_JOB, MONITORING_JOB, TRAINING_JOB, build_definitions
from lending_pipeline.defs.common import FEATURES
from lending_pipeline.telemetry import TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[2]


def test_every_asset_has_group_owner_kind_and_description(spec):
    defs = build_definitions(spec)
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    expected = {f"{stage}_{s.name}" for s in spec.sources for stage in ("raw", "validated")}
    expected |= {f"quarantine_{s.name}" for s in spec.sources} | {"applicant_features"}
    model_assets = {
        "training_set",
        "candidate_model",
        "model_evaluation",
        "champion_model",
        "scoring_bento",
    }
    monitored = {"drift_report", "shadow_comparison", "served_fairness"}
    assert set(specs) == expected | model_assets | monitored | {"challenger_vintages"}
    for key, asset in specs.items():
        assert asset.owners and asset.description and asset.kinds, key
        if key in monitored:
            assert asset.group_name == "monitoring"
            assert isinstance(asset.partitions_def, dg.DailyPartitionsDefinition)
        elif key == "challenger_vintages":
            assert asset.group_name == "challenger"
            assert isinstance(asset.partitions_def, dg.MonthlyPartitionsDefinition)
        elif key in model_assets:
            assert asset.group_name in {"training", "evaluation", "serving"}, key
            assert asset.partitions_def is None, key
        else:
            assert asset.group_name in {"ingestion", "validation", "features"}, key
            assert asset.partitions_def is not None, key
    assert defs.resolve_job_def(DAILY_JOB) is not None
    assert defs.resolve_job_def(TRAINING_JOB) is not None
    monitoring = defs.resolve_job_def(MONITORING_JOB)
    assert {n.name for n in monitoring.nodes} == monitored


def test_checks_are_blocking_and_named_after_their_asset(spec):
    graph = build_definitions(spec).resolve_asset_graph()
    checks = {k.name: graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert {"validated_applications_schema", "validated_bureau_expectations"} <= set(checks)
    assert {"applicant_features_freshness", "applicant_features_point_in_time"} <= set(checks)
    assert {"model_evaluation_min_roc_auc", "model_evaluation_integrity"} <= set(checks)
    monitoring = {
        "drift_report_within_limits",
        "drift_report_missing_fields",
        "drift_report_realised_performance",
        "challenger_vintages_not_worse",
    }
    assert monitoring <= set(checks)
    warnings = monitoring | {"training_set_enough_evidence", "served_fairness_adverse_impact"}
    for name, check in checks.items():
        assert check.blocking == (name not in warnings), name  # drift never stops ingestion
        assert name.startswith(check.asset_key.to_user_string()), name
    assert FEATURES in {c.asset_key for c in checks.values()}


def test_dagster_cli_validates_the_code_location(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "LENDING_PII_KEY": "x" * 20}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_import_does_no_work_and_switches_telemetry_off(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in TELEMETRY_OFF}
    env.pop("DAGSTER_HOME", None)
    code = (
        "import os, dagster as dg, lending_pipeline.definitions as d; "
        "from dagster.components.definitions import LazyDefinitions; "
        "assert isinstance(d.defs, LazyDefinitions), type(d.defs); "  # built when loaded, not here
        "assert os.listdir('.') == [], os.listdir('.'); "
        "built = d.defs(); "
        "assert isinstance(built, dg.Definitions); "
        "assert {'training_job', 'approve_model_job'} <= {j.name for j in built.jobs}; "
        "assert built.resolve_assets_def('champion_model') is not None; "
        f"print(sorted(k for k in {sorted(TELEMETRY_OFF)!r} if os.environ.get(k)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sorted(TELEMETRY_OFF))
    assert list(tmp_path.iterdir()) == []


def test_instance_config_switches_dagster_telemetry_off():
    text = (ROOT / "deploy" / "dagster.local.yaml").read_text()
    assert dg.__version__ and "enabled: false" in text
