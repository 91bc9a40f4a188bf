"""Dagster's own freshness policies, where "has it been updated recently?" is the question.

A policy gives an asset a freshness state (PASS / WARN / FAIL, UNKNOWN before its first
materialization), shown in the UI's asset catalog and asset page and evaluated by the daemon's
freshness loop (`freshness: enabled: true` in dagster.yaml). It never fails or blocks a run.

- The daily path (`raw_<entity source>`, `applicant_features`) and `drift_report`: a partition
  materialized within the last 26 h (WARN after, FAIL after 48 h); the daily and monitoring
  schedules run every 24 h.
- `champion_model`: a promotion (or a version held for approval) within 7 days (WARN after,
  FAIL after 30); the nightly retraining promotes whenever every gate passes.

A policy looks at when an asset was last materialized, not at the dates inside the data: the
demo's data are historical, so the demo is fresh on the day it ran and turns WARN a day later,
which is the truth (nothing has run since). Whether the bureau data inside the rows is recent is
a data rule, the check `applicant_features_freshness`. Runbook: `docs/runbook.md#freshness`.
"""

import datetime as dt

import dagster as dg

from lending_pipeline.defs.common import FEATURES, raw_key
from lending_pipeline.defs.evaluation import CHAMPION_ASSET
from lending_pipeline.defs.metadata import runbook_url
from lending_pipeline.defs.monitoring import DRIFT_REPORT
from lending_pipeline.spec import PipelineSpec

DAILY = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(hours=48), warn_window=dt.timedelta(hours=26)
)
CHAMPION = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(days=30), warn_window=dt.timedelta(days=7)
)


def freshness_policies(spec: PipelineSpec) -> dict[dg.AssetKey, dg.FreshnessPolicy]:
    return {
        raw_key(spec.entity.source): DAILY,
        FEATURES: DAILY,
        DRIFT_REPORT: DAILY,
        CHAMPION_ASSET: CHAMPION,
    }


def with_freshness(spec: PipelineSpec, assets: list) -> list:
    """The assets, with a freshness policy (and the runbook entry it leads to) where one fits."""
    policies = freshness_policies(spec)

    def attach(asset: dg.AssetSpec) -> dg.AssetSpec:
        if asset.key not in policies:
            return asset
        linked = asset.merge_attributes(metadata={"freshness_runbook": runbook_url("freshness")})
        return linked.replace_attributes(freshness_policy=policies[asset.key])

    return dg.map_asset_specs(attach, assets)
