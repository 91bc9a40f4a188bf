"""The challenger's record on served traffic: what the audit log's `shadow` entries say beside
the decisions that were answered.

`paired` joins each shadow entry to its decision entry (same request id): who was served, who
was shadowed, both probabilities and decisions, the applicant's pseudonymised key and protected
attributes (when the request carried them). `daily_comparison` compares the two on one day's
traffic; `vintages` judges both on application months whose outcomes have matured (AUC, KS, bad
rate among approved, calibration), the evidence a promotion of the challenger can cite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import pandas as pd

from lending_pipeline.ml.audit import Entry
from lending_pipeline.ml.metrics import ks_statistic

APPROVE = "approve"
COLUMNS = [
    "request_id",
    "day",
    "month",
    "key",
    "champion_version",
    "champion_pd",
    "champion_decision",
    "challenger_version",
    "challenger_pd",
    "challenger_decision",
]


def paired(entries: Iterable[Entry], key: str, protected: list[str]) -> pd.DataFrame:
    """One row per answered request that has a shadow score."""
    decisions, shadows = {}, {}
    for entry in entries:
        if entry.kind == "decision":
            decisions[entry.data["request_id"]] = entry
        elif entry.kind == "shadow":
            shadows[entry.data["request_id"]] = entry.data
    rows = []
    for request_id, shadow in shadows.items():
        served = decisions.get(request_id)
        if served is None:
            continue
        data, inputs = served.data, served.data.get("inputs") or {}
        row = {
            "request_id": request_id,
            "day": served.time[:10],
            "month": served.time[:7],
            "key": inputs.get(key),
            "champion_version": data["model"]["version"],
            "champion_pd": data["probability_of_default"],
            "champion_decision": data.get("model_decision", data["decision"]),
            "challenger_version": shadow["model"]["version"],
            "challenger_pd": shadow["probability_of_default"],
            "challenger_decision": shadow["decision"],
        }
        rows.append(row | {name: inputs.get(name) for name in protected})
    return pd.DataFrame(rows, columns=[*COLUMNS, *protected])


def daily_comparison(pairs: pd.DataFrame, protected: list[str]) -> dict:
    """Champion against challenger on the same applications: decision agreement, approval
    rates (overall and per protected group), the PD distributions."""
    if pairs.empty:
        return {"rows": 0}
    champion_ok = pairs["champion_decision"] == APPROVE
    challenger_ok = pairs["challenger_decision"] == APPROVE
    by_group = {}
    for attribute in protected:
        values = pairs[attribute].astype("string").fillna("missing")
        by_group[attribute] = {
            str(group): {
                "rows": int(mask.sum()),
                "champion_approval_rate": float(champion_ok[mask].mean()),
                "challenger_approval_rate": float(challenger_ok[mask].mean()),
            }
            for group, mask in ((g, values == g) for g in sorted(values.unique()))
        }
    return {
        "rows": len(pairs),
        "champion_versions": sorted(pairs["champion_version"].unique().tolist()),
        "challenger_versions": sorted(pairs["challenger_version"].unique().tolist()),
        "decision_agreement": float(
            (pairs["champion_decision"] == pairs["challenger_decision"]).mean()
        ),
        "champion_approval_rate": float(champion_ok.mean()),
        "challenger_approval_rate": float(challenger_ok.mean()),
        "champion_mean_pd": float(pairs["champion_pd"].mean()),
        "challenger_mean_pd": float(pairs["challenger_pd"].mean()),
        "pd_correlation": float(np.corrcoef(pairs["champion_pd"], pairs["challenger_pd"])[0, 1])
        if len(pairs) > 1
        else None,
        "by_group": by_group,
    }


def vintages(
    pairs: pd.DataFrame,
    outcomes: pd.DataFrame,
    as_of: dt.date,
    maturity_days: int,
    min_rows: int,
) -> pd.DataFrame:
    """Per application month, on the requests whose outcome has matured by `as_of` (outcomes:
    the pseudonymised key and `target`): both models' AUC, KS, bad rate among approved and
    calibration gap (mean PD minus bad rate). A month with fewer than `min_rows` matured rows or
    one outcome only is listed, not judged."""
    from sklearn.metrics import roc_auc_score

    horizon = (as_of - dt.timedelta(days=maturity_days)).isoformat()
    matured = pairs[pairs["day"] <= horizon].merge(outcomes, on="key", how="inner")
    rows = []
    for month, group in matured.groupby("month", sort=True):
        target = group["target"].to_numpy(dtype=int)
        judged = len(group) >= min_rows and 0 < target.sum() < len(target)
        row = {"month": month, "rows": len(group), "judged": bool(judged)}
        for model in ("champion", "challenger"):
            prob = group[f"{model}_pd"].to_numpy(dtype=float)
            approved = (group[f"{model}_decision"] == APPROVE).to_numpy()
            row[f"{model}_auc"] = float(roc_auc_score(target, prob)) if judged else None
            row[f"{model}_ks"] = ks_statistic(target, prob) if judged else None
            row[f"{model}_bad_rate_approved"] = (
                float(target[approved].mean()) if judged and approved.any() else None
            )
            row[f"{model}_calibration_gap"] = float(prob.mean() - target.mean()) if judged else None
        rows.append(row)
    return pd.DataFrame(rows)


def worse_vintages(table: pd.DataFrame, tolerance: float) -> list[str]:
    """Matured months where the challenger's AUC is below the champion's by more than
    `tolerance`."""
    if table.empty:
        return []
    judged = table[table["judged"]]
    worse = judged["challenger_auc"] < judged["champion_auc"] - tolerance
    return judged.loc[worse, "month"].tolist()
