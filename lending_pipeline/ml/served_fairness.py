"""Fairness of the decisions actually served: approval rates and the adverse impact ratio per
protected attribute, from the audit log, per day.

The decision counted is the decision of record: the model's (or the kill switch's refer), unless
an admin override replaced it. Protected attribute values come from the request's inputs as
logged; when a request did not carry one, it is looked up by `drift.served_fairness.join_on` (a
column the request and the attribute's validated source share: the entity key or a PII column,
pseudonymised with the same key at ingestion and at serving) in the days before the decision.
Only aggregates leave this module (counts and rates per group, never a request's values).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from lending_pipeline.ml.audit import Entry, authentic
from lending_pipeline.ml.metrics import UNKNOWN_GROUP

APPROVE = "approve"


def served_decisions(
    entries: Iterable[Entry],
    day: str,
    attributes: list[str],
    join_on: str | None = None,
    key: bytes | None = None,
    inputs=None,
) -> pd.DataFrame:
    """One row per decision logged on `day` (UTC): request id, decision of record, whether it
    was overridden, each protected attribute from the inputs (None when absent, or erased) and,
    with `join_on`, that input's value for the lookup. `inputs` opens a payload's sealed inputs
    (`data_keys.InputsReader.inputs`); without it only inputs in clear are read. With the audit
    `key`, entries whose MAC does not match are left out and counted in
    `frame.attrs["unauthentic"]`."""
    rows: dict[str, dict] = {}
    overrides: dict[str, str] = {}
    unauthentic = 0
    for entry in entries:
        relevant = entry.kind == "override" or (
            entry.kind == "decision" and entry.time.startswith(day)
        )
        if relevant and key is not None and not authentic(key, entry):
            unauthentic += 1
            continue
        if entry.kind == "decision" and entry.time.startswith(day):
            payload = entry.data
            values = (inputs(payload) if inputs else payload.get("inputs")) or {}
            row = {"request_id": payload["request_id"], "decision": payload["decision"]}
            row |= {a: values.get(a) for a in attributes}
            if join_on:
                row["_join"] = values.get(join_on)
            rows[payload["request_id"]] = row
        elif entry.kind == "override":
            payload = entry.data
            overrides[payload["request_id"]] = payload["decision"]
    columns = ["request_id", "decision", "overridden", *attributes]
    if not rows:
        frame = pd.DataFrame(columns=columns + (["_join"] if join_on else []))
    else:
        frame = pd.DataFrame(list(rows.values()))
        replaced = frame["request_id"].map(overrides)
        frame["overridden"] = replaced.notna() & (replaced != frame["decision"])
        frame["decision"] = replaced.fillna(frame["decision"])
        frame = frame[columns + (["_join"] if join_on else [])]
    frame.attrs["unauthentic"] = unauthentic
    return frame


def attach_attributes(
    decisions: pd.DataFrame, lookup: pd.DataFrame | None, attributes: list[str]
) -> pd.DataFrame:
    """Fill attribute values the requests did not carry from `lookup` (indexed by the join
    value, one row each; the latest wins). Returns the frame without the join column."""
    frame = decisions.copy()
    if lookup is not None and "_join" in frame and len(lookup):
        lookup = lookup[~lookup.index.duplicated(keep="last")]
        for attribute in attributes:
            if attribute in lookup:
                found = frame["_join"].map(lookup[attribute])
                frame[attribute] = frame[attribute].where(frame[attribute].notna(), found)
    return frame.drop(columns=["_join"], errors="ignore")


@dataclass
class ServedFairness:
    """The day's served approval rates and adverse impact ratios, with the verdict."""

    day: str
    decisions: int
    approval_rate: float | None
    overridden: int
    attributes: dict[str, dict] = field(default_factory=dict)
    min_ratio: float | None = None
    min_attribute: str | None = None
    min_group: str | None = None
    judged: bool = False
    measurable: bool = False
    reason: str = ""
    threshold: float = 0.8
    unauthentic: int = 0

    @property
    def passed(self) -> bool:
        if self.unauthentic:
            return False
        if not self.judged:
            return True
        return self.measurable and self.min_ratio >= self.threshold

    def describe(self) -> str:
        tampered = ""
        if self.unauthentic:
            tampered = (
                f"{self.unauthentic} audit entries fail their MAC and were left out: run "
                "`lending-pipeline audit verify`; "
            )
        return tampered + self._verdict()

    def _verdict(self) -> str:
        if not self.judged:
            return f"not judged: {self.reason}"
        if not self.measurable:
            return f"NOT MEASURABLE on {self.decisions} served decisions: {self.reason}"
        verdict = "within" if self.passed else "BELOW"
        return (
            f"served adverse impact ratio {self.min_ratio:.3f} ({self.min_attribute}="
            f"{self.min_group}) {verdict} the limit {self.threshold:g} on {self.decisions} "
            f"decisions (approval rate {self.approval_rate:.1%}, {self.overridden} overridden)"
        )

    def group_table(self) -> pd.DataFrame:
        rows = [
            {
                "attribute": name,
                "group": group,
                "decisions": values["sizes"][group],
                "approval_rate": round(rate, 4),
                "ratio_to_highest": (
                    round(values["ratios"][group], 3) if group in values["ratios"] else "small"
                ),
            }
            for name, values in self.attributes.items()
            for group, rate in sorted(values["rates"].items())
        ]
        columns = ["attribute", "group", "decisions", "approval_rate", "ratio_to_highest"]
        return pd.DataFrame(rows, columns=columns)

    def summary(self) -> dict:
        return {
            "day": self.day,
            "decisions": self.decisions,
            "approval_rate": self.approval_rate,
            "overridden": self.overridden,
            "judged": self.judged,
            "measurable": self.measurable,
            "passed": self.passed,
            "min_ratio": self.min_ratio,
            "min_attribute": self.min_attribute,
            "min_group": self.min_group,
            "threshold": self.threshold,
            "reason": self.reason,
            "unauthentic_entries": self.unauthentic,
            "attributes": self.attributes,
        }


def served_fairness(
    decisions: pd.DataFrame,
    day: str,
    attributes: list[str],
    min_group_size: int,
    min_decisions: int,
    threshold: float,
) -> ServedFairness:
    """Approval rate (share of decisions of record that are `approve`) per group of each
    protected attribute, and each group's ratio to the most-approved group; judged when there
    are at least `min_decisions`, measurable when some attribute has two groups of at least
    `min_group_size` decisions (otherwise the group sizes are named and the check fails)."""
    n = len(decisions)
    approved = (decisions["decision"] == APPROVE).to_numpy()
    result = ServedFairness(
        day=day,
        decisions=n,
        approval_rate=float(approved.mean()) if n else None,
        overridden=int(decisions["overridden"].sum()) if n else 0,
        threshold=threshold,
        unauthentic=int(decisions.attrs.get("unauthentic", 0)),
    )
    if n == 0:
        result.reason = "no decisions were served on this day"
        return result
    if not attributes:
        result.reason = "the spec declares no protected attributes"
        return result
    for attribute in attributes:
        groups = decisions[attribute].astype(object).where(decisions[attribute].notna(), None)
        groups = groups.fillna(UNKNOWN_GROUP).astype(str)
        stats = pd.Series(approved).groupby(groups.to_numpy()).agg(["mean", "size"])
        rates = {str(g): float(r) for g, r in stats["mean"].items()}
        sizes = {str(g): int(s) for g, s in stats["size"].items()}
        kept = {g: r for g, r in rates.items() if sizes[g] >= min_group_size}
        best = max(kept.values(), default=0.0)
        ratios = {g: (r / best if best > 0 else 1.0) for g, r in kept.items()}
        result.attributes[attribute] = {"rates": rates, "sizes": sizes, "ratios": ratios}
        if len(ratios) >= 2:
            group = min(ratios, key=ratios.get)
            if result.min_ratio is None or ratios[group] < result.min_ratio:
                result.min_ratio, result.min_attribute, result.min_group = (
                    ratios[group],
                    attribute,
                    group,
                )
    if n < min_decisions:
        result.reason = f"{n} decisions served, fewer than min_decisions {min_decisions}"
        return result
    result.judged = True
    result.measurable = result.min_ratio is not None
    if not result.measurable:
        sizes = "; ".join(
            f"{name}: " + ", ".join(f"{g} {s}" for g, s in sorted(v["sizes"].items()))
            for name, v in result.attributes.items()
        )
        result.reason = (
            f"no protected attribute has two groups of at least min_group_size "
            f"{min_group_size} decisions (group sizes: {sizes})"
        )
    return result
