"""Dagster freshness policies: on which assets, and what the daemon's freshness loop makes of
them over time on a real instance (the code location loaded as `make dev` loads it)."""

import datetime as dt

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.freshness import FreshnessDaemon

from lending_pipeline.definitions import build_definitions
from lending_pipeline.defs.common import FEATURES
from lending_pipeline.defs.evaluation import CHAMPION_ASSET
from lending_pipeline.links import RUNBOOK
from lending_pipeline_tests.conftest import PII_KEY
from lending_pipeline_tests.ui import ROOT


def test_policies_sit_where_not_updated_recently_is_the_question(spec):
    specs = {s.key.to_user_string(): s for s in build_definitions(spec).resolve_all_asset_specs()}
    with_policy = {key for key, asset in specs.items() if asset.freshness_policy is not None}
    assert with_policy == {
        "raw_applications",
        "applicant_features",
        "drift_report",
        "champion_model",
    }
    for key in with_policy:
        assert specs[key].metadata["freshness_runbook"].value.endswith("/runbook.md#freshness")
    assert '<a id="freshness"></a>' in RUNBOOK.read_text()
    checks = build_definitions(spec).resolve_asset_graph().asset_check_keys
    assert "applicant_features_freshness" in {c.name for c in checks}  # the data rule stays


def states(instance, keys) -> dict:
    records = instance.get_freshness_state_records(keys)
    return {key: records[key].freshness_state if key in records else None for key in keys}


def test_the_daemon_turns_a_quiet_asset_warn_then_fail(tmp_path, monkeypatch):
    monkeypatch.setenv("LENDING_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LENDING_PII_KEY", PII_KEY)
    keys = [FEATURES, CHAMPION_ASSET]
    target = ModuleTarget(
        module_name="lending_pipeline.definitions",
        attribute=None,
        working_directory=str(ROOT),
        location_name="lending_pipeline",
    )
    overrides = {"freshness": {"enabled": True}, "telemetry": {"enabled": False}}
    with (
        dg.instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as instance,
        create_test_daemon_workspace_context(target, instance) as workspace,
    ):
        daemon = FreshnessDaemon()
        start = dt.datetime.now(dt.UTC)

        def tick(after: dt.timedelta) -> dict:
            with freeze_time(start + after):
                list(daemon.run_iteration(workspace))
            return states(instance, keys)

        assert set(tick(dt.timedelta(0)).values()) == {FreshnessState.UNKNOWN}
        day = (start - dt.timedelta(days=1)).date().isoformat()
        instance.report_runless_asset_event(dg.AssetMaterialization(FEATURES, partition=day))
        instance.report_runless_asset_event(dg.AssetMaterialization(CHAMPION_ASSET))
        expected = {
            dt.timedelta(hours=1): (FreshnessState.PASS, FreshnessState.PASS),
            dt.timedelta(hours=27): (FreshnessState.WARN, FreshnessState.PASS),
            dt.timedelta(hours=49): (FreshnessState.FAIL, FreshnessState.PASS),
            dt.timedelta(days=8): (FreshnessState.FAIL, FreshnessState.WARN),
            dt.timedelta(days=31): (FreshnessState.FAIL, FreshnessState.FAIL),
        }
        for after, (features, champion) in expected.items():
            assert tick(after) == {FEATURES: features, CHAMPION_ASSET: champion}, after
        assert instance.get_runs() == []  # a policy is a state in the UI: it launches no run
