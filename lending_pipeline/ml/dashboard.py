"""The drift dashboard: Evidently's monitoring UI over a local workspace.

One Evidently project per spec (its id derived from the spec name, so concurrent runs agree) and
one snapshot per monitored day (timestamped at that day, replacing an earlier snapshot of the
same day). Each snapshot holds, for the day's applications against the champion's training
population:

- `QuantilePSI` per monitored feature and for the predicted PD (`score`): the same
  reference-quantile PSI as `ml/drift.py` (the tiers), next to `PSITier` lines for warn/retrain;
- Evidently's `MissingValueCount` of the nullable monitored fields (the bureau fields);
- `MedianShift` of the income and utilization columns (median today / reference median - 1);
- Evidently's `QuantileValue` / `MeanValue` of the predicted PD (the score distribution);
- from the decisions the scoring service logged that day: `DecisionShare` (approval, refer and
  decline rates) and `DeclineReasons` (share of declines citing each of the most frequent codes).

Plain functions (no Dagster); aggregates only leave here, never a row's values.
`evidently ui --workspace <dir>` (started by `make dev`, see `links.evidently_ui_base`) shows it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lending_pipeline.ml.decision import DECISIONS, DECLINE
from lending_pipeline.ml.drift import monitored_columns
from lending_pipeline.spec import PipelineSpec

SCORE = "score"  # the champion's predicted probability of default
SERVED = "served"  # the additional dataset of the day's served decisions
PD_QUANTILES = (0.1, 0.5, 0.9)
TOP_REASONS = 5
_NAMESPACE = uuid.UUID("6f1c1f9e-3b7a-4c55-9d4e-4c3a8f0b2a11")


def workspace_dir(data_dir: Path) -> Path:
    """The local Evidently workspace: `<data dir>/evidently` (the base data dir: the products of
    a products file share it, a project each, so one UI shows them all)."""
    return data_dir / "evidently"


def project_id(spec_name: str) -> uuid.UUID:
    """The spec's project id: the same in every process, so runs never create two projects."""
    return uuid.uuid5(_NAMESPACE, f"project:{spec_name}")


def median_shift(reference: np.ndarray, current: np.ndarray) -> float:
    """median(current) / median(reference) - 1 over present values (NaN when undefined)."""
    ref, cur = np.nanmedian(reference) if reference.size else np.nan, np.nan
    if current.size and not np.isnan(current).all():
        cur = np.nanmedian(current)
    if np.isnan(ref) or np.isnan(cur) or ref == 0:
        return float("nan")
    return round(float(cur / ref - 1), 6)


def decline_reason_shares(served: pd.DataFrame, top: int = TOP_REASONS) -> dict[str, float]:
    """Share of declined decisions citing each reason code, the `top` most frequent."""
    declined = served[served["decision"] == DECLINE]
    if declined.empty:
        return {}
    counts = Counter(code for codes in declined["reason_codes"] for code in codes)
    return {code: round(n / len(declined), 6) for code, n in counts.most_common(top)}


def served_decisions(payloads: Iterable[dict]) -> pd.DataFrame:
    """The decision and reason codes of audited decision payloads (no inputs, no ids)."""
    rows = [(p["decision"], tuple(p.get("reason_codes") or ())) for p in payloads]
    return pd.DataFrame(rows, columns=["decision", "reason_codes"])


@dataclass(frozen=True)
class Layout:
    """What the dashboard follows for a spec: which columns, and which of them are categorical."""

    psi_columns: list[str]
    categorical: list[str]
    missing_columns: list[str]
    shift_columns: list[str]
    bins: int
    psi_warn: float
    psi_retrain: float


def _income_or_utilization(column: str) -> bool:
    """An income amount (`*income`, not a ratio `*_to_income`) or a utilization column."""
    return (column.endswith("income") and "_to_" not in column) or "utiliz" in column


def layout(spec: PipelineSpec) -> Layout:
    """The dashboard's columns: every monitored feature (PSI), the nullable raw ones (missing
    rate; the bureau fields of the consumer-loan spec), the income amounts and utilization
    (median shift; every numeric one when the spec has neither)."""
    columns, categorical = monitored_columns(spec)
    derived = {f.name for f in spec.features.derived}
    raw = [c for c in columns if c not in derived]
    missing = [c for c in raw if spec.column(c).nullable]
    numeric = [c for c in columns if c not in categorical]
    shift = [c for c in numeric if _income_or_utilization(c)] or numeric
    return Layout(
        psi_columns=columns,
        categorical=categorical,
        missing_columns=missing,
        shift_columns=shift,
        bins=spec.drift.bins,
        psi_warn=spec.drift.psi_warn,
        psi_retrain=spec.drift.psi_retrain,
    )


def metrics(plan: Layout, has_scores: bool, has_served: bool) -> list:
    """The Evidently metrics of a day's snapshot."""
    from evidently.metrics import MeanValue, MissingValueCount, QuantileValue

    from lending_pipeline.ml.dashboard_metrics import (
        DecisionShare,
        DeclineReasons,
        MedianShift,
        PSITier,
        QuantilePSI,
    )

    items = [
        QuantilePSI(column=c, bins=plan.bins, categorical=c in plan.categorical)
        for c in plan.psi_columns
    ]
    items += [
        PSITier(tier=t, psi=v) for t, v in (("warn", plan.psi_warn), ("retrain", plan.psi_retrain))
    ]
    items += [MissingValueCount(column=c) for c in plan.missing_columns]
    items += [MedianShift(column=c) for c in plan.shift_columns]
    if has_scores:
        items.append(QuantilePSI(column=SCORE, bins=plan.bins))
        items += [QuantileValue(column=SCORE, quantile=q) for q in PD_QUANTILES]
        items.append(MeanValue(column=SCORE))
    if has_served:
        items += [DecisionShare(decision=d) for d in DECISIONS]
        items.append(DeclineReasons(top=TOP_REASONS))
    return items


def _dataset(frame: pd.DataFrame, plan: Layout):
    from evidently import DataDefinition, Dataset

    categorical = [c for c in plan.categorical if c in frame.columns]
    numeric = [c for c in frame.columns if c not in categorical]
    text = {c: frame[c].astype(object).where(frame[c].notna(), None) for c in categorical}
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    return Dataset.from_pandas(frame.assign(**text), data_definition=definition)


def _served_dataset(served: pd.DataFrame):
    from evidently import DataDefinition, Dataset

    plain = served.assign(reason_codes=served["reason_codes"].map(list))
    definition = DataDefinition(categorical_columns=["decision"])
    return Dataset.from_pandas(plain, data_definition=definition)


def day_snapshot(
    spec: PipelineSpec,
    day: str,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    current_scores: np.ndarray | None,
    reference_scores: np.ndarray | None,
    served: pd.DataFrame | None,
    metadata: dict[str, str] | None = None,
):
    """The day's Evidently snapshot (timestamped at the day, 00:00 UTC)."""
    from evidently import Report

    plan = layout(spec)
    has_scores = current_scores is not None and reference_scores is not None
    has_served = served is not None and len(served) > 0
    cur, ref = current[plan.psi_columns], reference[plan.psi_columns]
    if has_scores:
        cur = cur.assign(**{SCORE: np.asarray(current_scores, dtype="float64")})
        ref = ref.assign(**{SCORE: np.asarray(reference_scores, dtype="float64")})
    additional = {SERVED: _served_dataset(served)} if has_served else None
    report = Report(metrics(plan, has_scores, has_served))
    return report.run(
        current_data=_dataset(cur, plan),
        reference_data=_dataset(ref, plan),
        additional_data=additional,
        timestamp=dt.datetime.fromisoformat(day),
        metadata={"day": day, **(metadata or {})},
        tags=["drift"],
        name=f"{spec.name} {day}",
    )


def _panel_id(spec_name: str, title: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"panel:{spec_name}:{title}")


def dashboard(spec: PipelineSpec):
    """The project's dashboard: one tab of panels over time."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    plan = layout(spec)
    warn, retrain = plan.psi_warn, plan.psi_retrain
    psi = [
        PanelMetric(legend=c, metric="QuantilePSI", metric_labels={"column": c})
        for c in [*plan.psi_columns, SCORE]
    ]
    tiers = [
        PanelMetric(legend=f"{t} tier ({v:g})", metric="PSITier", metric_labels={"tier": t})
        for t, v in (("warn", warn), ("retrain", retrain))
    ]
    missing = [
        PanelMetric(
            legend=c,
            metric="MissingValueCount",
            metric_labels={"column": c, "value_type": "share"},
        )
        for c in plan.missing_columns
    ]
    shift = [
        PanelMetric(legend=c, metric="MedianShift", metric_labels={"column": c})
        for c in plan.shift_columns
    ]
    quantiles = [
        PanelMetric(
            legend=f"PD p{int(q * 100)}",
            metric="QuantileValue",
            metric_labels={"column": SCORE, "quantile": str(q)},
        )
        for q in PD_QUANTILES
    ]
    mean = [PanelMetric(legend="PD mean", metric="MeanValue", metric_labels={"column": SCORE})]
    decisions = [
        PanelMetric(legend=f"{d} rate", metric="DecisionShare", metric_labels={"decision": d})
        for d in DECISIONS
    ]
    reasons = [PanelMetric(legend="{{label}}", metric="DeclineReasons")]
    panels = [
        line_plot_panel(
            "PSI per feature",
            psi + tiers,
            f"Reference-quantile PSI of each monitored feature and of the predicted PD against "
            f"the champion's training population; warn at {warn:g}, retrain at {retrain:g}.",
        ),
        line_plot_panel(
            "Missing rate of nullable fields",
            missing,
            "Share of the day's applications without a value (bureau fields and other nullable "
            "inputs).",
            size="half",
        ),
        line_plot_panel(
            "Income and utilization shift"
            if any(_income_or_utilization(c) for c in plan.shift_columns)
            else "Median shift of numeric inputs",
            shift,
            "Median of the day / median of the champion's training population - 1.",
            size="half",
        ),
        line_plot_panel(
            "Score distribution",
            quantiles + mean,
            "Quantiles and mean of the champion's predicted probability of default.",
            size="half",
        ),
        line_plot_panel(
            "Approval rate of served decisions",
            decisions,
            "Decisions the scoring service logged that day (the audit log).",
            size="half",
        ),
        bar_plot_panel(
            "Most frequent decline reasons",
            reasons,
            f"Share of the day's served declines citing each of the {TOP_REASONS} most "
            "frequent reason codes.",
        ),
    ]
    for panel in panels:
        panel.id = _panel_id(spec.name, panel.title)
    tab = DashboardTabModel(
        id=_panel_id(spec.name, "tab:drift"), title="Drift", panels=[p.id for p in panels]
    )
    return DashboardModel(tabs=[tab], panels=panels)


def snapshot_id(spec_name: str, day: str) -> uuid.UUID:
    """The day's snapshot id: re-running a day replaces its snapshot, and its link stays valid."""
    return uuid.uuid5(_NAMESPACE, f"snapshot:{spec_name}:{day}")


def publish(workspace_path: Path, spec: PipelineSpec, day: str, snapshot) -> tuple[str, str]:
    """Store the day's snapshot in the spec's project under the day's id (replacing an earlier
    one) and (re)write the project's dashboard; returns (project id, snapshot id).

    The snapshot goes through the workspace's own storage (`Workspace.state`), under an id of
    our choosing rather than `add_run`'s random one: finding the day's earlier snapshot would
    otherwise mean reading every snapshot of the project.
    """
    from evidently.sdk.models import ProjectModel
    from evidently.ui.workspace import Workspace

    workspace_path.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(str(workspace_path))
    pid = project_id(spec.name)
    if workspace.get_project(pid) is None:
        workspace.add_project(
            ProjectModel(
                id=pid,
                name=spec.name,
                description=f"Drift of the {spec.name} applications and served decisions, a "
                "snapshot per monitored day (lending_pipeline drift_report).",
            )
        )
    panels = dashboard(spec)
    if workspace.get_dashboard(pid) != panels:  # concurrent days: write only what changed
        workspace.save_dashboard(pid, panels)
    sid = snapshot_id(spec.name, day)
    workspace.state.write_snapshot(pid, sid, snapshot.to_snapshot_model())
    return str(pid), str(sid)
