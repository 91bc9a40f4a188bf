"""Asset tags, searchable and filterable in the UI: `domain`, `tier` and `pii`.

- `domain`: `credit_risk` for every asset of the pipeline; `product`: the spec's name.
- `tier`: where the asset sits: `bronze` (raw landings), `silver` (validated and quarantined),
  `gold` (features, training set), `model` (candidate, evaluation, champion, bento),
  `monitoring` (drift reports, served fairness, the shadow challenger's record).
- `pii`: `pseudonymised` when the asset holds a source's PII columns (as keyed pseudonyms: raw
  PII never leaves ingestion), otherwise `none`.
"""

from __future__ import annotations

import warnings

import dagster as dg

from lending_pipeline.spec import PipelineSpec

TIER_BY_GROUP = {
    "ingestion": "bronze",
    "validation": "silver",
    "features": "gold",
    "training": "model",
    "evaluation": "model",
    "serving": "model",
    "monitoring": "monitoring",
    "challenger": "monitoring",
}
GOLD = {"training_set"}


def asset_tags(spec: PipelineSpec, asset: dg.AssetSpec) -> dict[str, str]:
    name = asset.key.to_user_string()
    tier = "gold" if name in GOLD else TIER_BY_GROUP.get(asset.group_name or "", "other")
    with_pii = {
        f"{prefix}_{source.name}"
        for source in spec.sources
        if source.pii_columns
        for prefix in ("raw", "validated", "quarantine")
    }
    return {
        "domain": "credit_risk",
        "product": spec.name,
        "tier": tier,
        "pii": "pseudonymised" if name in with_pii else "none",
    }


def tagged(spec: PipelineSpec, assets: list) -> list:
    """The assets with their tags and links to the code that defines them (code references
    are a beta API in Dagster 1.13, whose warning is silenced here)."""
    with_tags = dg.map_asset_specs(
        lambda asset: asset.merge_attributes(tags=asset_tags(spec, asset)), assets
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.with_source_code_references(with_tags)
