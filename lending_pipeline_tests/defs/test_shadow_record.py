"""The challenger's record: pairing shadow scores with served decisions, the daily comparison,
vintages, and the Dagster assets over a real audit log."""

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lending_pipeline.definitions import build_definitions
from lending_pipeline.defs.common import validated_key
from lending_pipeline.defs.resources import partition_path
from lending_pipeline.defs.shadow import COMPARISON, NOT_WORSE, VINTAGES
from lending_pipeline.ml import audit
from lending_pipeline.ml.shadow_record import daily_comparison, paired, vintages, worse_vintages

MONTH_DAYS = ["2025-03-03", "2025-03-10", "2025-03-17"]


def served(n: int, seed: int, challenger_skill: float):
    """n decisions with outcomes: the champion's PD tracks the outcome, the challenger's tracks
    it with `challenger_skill` (0 = noise)."""
    rng = np.random.default_rng(seed)
    target = rng.random(n) < 0.2
    champion = np.clip(0.15 + 0.3 * target + rng.normal(0, 0.1, n), 0.01, 0.99)
    noise = rng.random(n)
    challenger = np.clip(challenger_skill * champion + (1 - challenger_skill) * noise, 0.01, 0.99)
    return target.astype(int), champion, challenger


def decision_of(pd_: float) -> str:
    return "approve" if pd_ < 0.2 else "decline" if pd_ > 0.4 else "refer"


def write_log(data_dir, monkeypatch, target, champion, challenger, sexes, days) -> None:
    store = audit.open_store(data_dir)
    try:
        for i, (c, s) in enumerate(zip(champion, challenger, strict=True)):
            day = days[i % len(days)]
            monkeypatch.setattr(audit, "now", lambda day=day: f"{day}T12:00:00.000000+00:00")
            rid = f"r{i}"
            inputs = {"application_id": f"a{i}", "sex": sexes[i % len(sexes)]}
            decision = {
                "caller": "test",
                "decision": decision_of(c),
                "inputs": inputs,
                "model": {"name": "m", "version": "2"},
                "probability_of_default": float(c),
                "request_id": rid,
            }
            store.append("decision", [decision])
            shadow = {
                "champion_decision": decision_of(c),
                "decision": decision_of(s),
                "model": {"name": "m", "version": "1"},
                "probability_of_default": float(s),
                "request_id": rid,
            }
            store.append("shadow", [shadow])
    finally:
        store.close()
    monkeypatch.undo()


def test_pairs_join_shadow_scores_to_served_decisions_and_compare_them(tmp_path, monkeypatch):
    monkeypatch.setenv("LENDING_DATA_DIR", str(tmp_path))
    target, champion, challenger = served(200, 1, 0.5)
    write_log(tmp_path, monkeypatch, target, champion, challenger, ["F", "M"], MONTH_DAYS)
    store = audit.open_store(tmp_path)
    entries = list(store.entries())
    store.close()
    pairs = paired(entries, "application_id", ["sex"])
    assert len(pairs) == 200 and set(pairs["day"]) == set(MONTH_DAYS)
    summary = daily_comparison(pairs, ["sex"])
    agree = np.mean(
        [decision_of(a) == decision_of(b) for a, b in zip(champion, challenger, strict=True)]
    )
    assert summary["decision_agreement"] == pytest.approx(agree)
    women = pairs["sex"] == "F"
    approved = np.array([decision_of(s) == "approve" for s in challenger])
    assert summary["by_group"]["sex"]["F"]["challenger_approval_rate"] == pytest.approx(
        approved[women.to_numpy()].mean()
    )
    orphan = paired([e for e in entries if e.kind == "shadow"], "application_id", [])
    assert orphan.empty  # a shadow score without its served decision is not a comparison


def test_vintages_judge_matured_months_only_and_flag_a_worse_challenger():
    target, champion, challenger = served(600, 2, 0.0)
    days = ["2025-01-10"] * 300 + ["2025-02-10"] * 300
    pairs = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(600)],
            "day": days,
            "month": [d[:7] for d in days],
            "key": [f"a{i}" for i in range(600)],
            "champion_pd": champion,
            "champion_decision": [decision_of(p) for p in champion],
            "challenger_pd": challenger,
            "challenger_decision": [decision_of(p) for p in challenger],
        }
    )
    outcomes = pd.DataFrame({"key": pairs["key"], "target": target})
    table = vintages(pairs, outcomes, dt.date(2025, 3, 20), maturity_days=60, min_rows=100)
    assert table["month"].tolist() == ["2025-01"]  # February has not matured by 20 March
    row = table.iloc[0]
    assert row["champion_auc"] == pytest.approx(roc_auc_score(target[:300], champion[:300]))
    assert worse_vintages(table, tolerance=0.05) == ["2025-01"]
    small = vintages(pairs, outcomes, dt.date(2025, 3, 20), maturity_days=60, min_rows=1000)
    assert not small["judged"].any() and worse_vintages(small, 0.05) == []


@pytest.mark.parametrize("skill, passed", [(1.0, True), (0.0, False)])
def test_the_assets_compare_and_flag_on_a_real_audit_log(
    spec, data_dir, instance, monkeypatch, skill, passed
):
    target, champion, challenger = served(spec.drift.min_rows + 100, 3, skill)  # judged
    write_log(data_dir, monkeypatch, target, champion, challenger, ["F", "M"], MONTH_DAYS)
    monkeypatch.setenv("LENDING_DATA_DIR", str(data_dir))
    outcomes = pd.DataFrame(
        {"application_id": [f"a{i}" for i in range(len(target))], spec.target.column: target}
    )
    path = partition_path(data_dir, validated_key(spec.target.source), "2025-03-20")
    path.parent.mkdir(parents=True, exist_ok=True)
    outcomes.to_parquet(path)
    defs = build_definitions(spec)
    assets = [defs.resolve_assets_def(COMPARISON), defs.resolve_assets_def(VINTAGES)]
    resources = {"io_manager": defs.resources["io_manager"]}
    daily = dg.materialize(
        assets[:1], partition_key=MONTH_DAYS[0], instance=instance, resources=resources
    )
    meta = daily.asset_materializations_for_node("shadow_comparison")[0].metadata
    first_day = len(range(0, len(target), len(MONTH_DAYS)))
    assert meta["rows"].value == first_day and 0 <= meta["decision_agreement"].value <= 1
    monthly = dg.materialize(
        assets[1:],
        partition_key="2025-03-01",
        instance=instance,
        resources=resources,
        run_config={"ops": {"challenger_vintages": {"config": {"as_of": "2025-06-01"}}}},
    )
    (check,) = monthly.get_asset_check_evaluations()
    assert check.check_name == NOT_WORSE.name and check.passed is passed
    assert check.metadata["judged"].value is True
