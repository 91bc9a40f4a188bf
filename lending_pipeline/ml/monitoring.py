"""What drift monitoring compares: the champion and its training range, the inputs the scoring
service saw (from the audit log), and the champion's realised performance on matured cohorts.

Plain functions (no Dagster): the `drift_report` asset calls them; the drift itself is
`ml/drift.py`. Only aggregates leave here in results meant for people (never a row's values).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lending_pipeline.ml import tracking
from lending_pipeline.ml.audit import Entry
from lending_pipeline.ml.drift import monitored_columns
from lending_pipeline.ml.features import derive
from lending_pipeline.ml.metrics import confusion_at_cutoff
from lending_pipeline.ml.scoring import column_arrays, request_columns
from lending_pipeline.spec import DriftSpec, PipelineSpec

DECISION = "decision"


@dataclass(frozen=True)
class Champion:
    """The served model: its version, fitted model, training days, cutoff and promised metrics."""

    version: str
    model: object
    training_days: list[str]
    cutoff: float
    promised: dict[str, float]


def days_in_range(text: str) -> list[str]:
    """The days of a `YYYY-MM-DD..YYYY-MM-DD` range (a lineage `partition_range` tag)."""
    first, last = (dt.date.fromisoformat(part) for part in text.split(".."))
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def load_champion(config: tracking.TrackingConfig) -> Champion | None:
    """The `champion` version with its model and lineage, or None when there is none yet."""
    version = tracking.alias_version(config, tracking.CHAMPION)
    if version is None:
        return None
    tags = tracking.version_tags(config, version)
    run = tracking.version_run(config, version)
    metrics = run.data.metrics
    return Champion(
        version=version,
        model=tracking.load_model(config, version),
        training_days=days_in_range(tags["partition_range"]),
        cutoff=float(run.data.params["cutoff"]),
        promised={
            "roc_auc": metrics.get("oot_candidate_roc_auc", np.nan),
            "bad_rate_among_approved": metrics.get("oot_candidate_bad_rate_among_approved", np.nan),
        },
    )


def served_features(
    spec: PipelineSpec,
    entries: Iterable[Entry],
    day: str,
    inputs: Callable[[dict], dict | None] | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The monitored columns and the probabilities of the decisions logged on `day` (UTC).

    The audit log keeps each request's pseudonymised inputs, sealed under the applicant's data
    key (`inputs` opens them, e.g. `data_keys.InputsReader.inputs`); decisions whose inputs were
    erased, or cannot be opened, are left out. The features are derived from the inputs by the
    same `derive` as in training and scoring.
    """
    columns, _ = monitored_columns(spec)
    records, probabilities = [], []
    for entry in entries:
        if entry.kind == DECISION and entry.time.startswith(day):
            payload = entry.data
            record = inputs(payload) if inputs else payload.get("inputs")
            if record is None:
                continue
            records.append(record)
            probabilities.append(payload["probability_of_default"])
    if not records:
        return pd.DataFrame(columns=columns), np.empty(0)
    derived = derive(spec, column_arrays(request_columns(spec), records), len(records))
    frame = pd.DataFrame({c: derived[c] for c in columns})
    return frame, np.asarray(probabilities, dtype="float64")


def matured_cohort_days(
    partition: str, training_days: list[str], maturity_days: int, window_days: int
) -> list[str]:
    """Application days after the champion's training range whose outcomes have matured by
    `partition`, the latest `window_days` of them."""
    day = dt.date.fromisoformat(partition)
    last = day - dt.timedelta(days=maturity_days)
    first = max(
        dt.date.fromisoformat(training_days[-1]) + dt.timedelta(days=1),
        last - dt.timedelta(days=window_days - 1),
    )
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class RealisedPerformance:
    """The champion's ROC-AUC and bad rate among approved on matured cohorts vs its promise."""

    judged: bool
    reason: str
    rows: int
    days: list[str]
    roc_auc: float | None = None
    bad_rate_among_approved: float | None = None
    promised_roc_auc: float | None = None
    promised_bad_rate: float | None = None
    max_auc_drop: float | None = None
    max_bad_rate_rise: float | None = None

    @property
    def auc_ok(self) -> bool:
        return self.roc_auc >= self.promised_roc_auc - self.max_auc_drop

    @property
    def bad_rate_ok(self) -> bool:
        return self.bad_rate_among_approved <= self.promised_bad_rate + self.max_bad_rate_rise

    @property
    def passed(self) -> bool:
        return not self.judged or (self.auc_ok and self.bad_rate_ok)

    def describe(self) -> str:
        if not self.judged:
            return f"not judged yet: {self.reason}"
        verdict = "within" if self.passed else "OUTSIDE"
        return (
            f"realised performance {verdict} the promise on {self.rows} matured applications "
            f"({self.days[0]}..{self.days[-1]}): ROC-AUC {self.roc_auc:.4f} (promised "
            f"{self.promised_roc_auc:.4f}, allowed drop {self.max_auc_drop:g}), bad rate among "
            f"approved {self.bad_rate_among_approved:.4f} (promised {self.promised_bad_rate:.4f}, "
            f"allowed rise {self.max_bad_rate_rise:g})"
        )


def realised_performance(
    labelled: pd.DataFrame,
    prob: np.ndarray,
    champion: Champion,
    days: list[str],
    settings: DriftSpec,
) -> RealisedPerformance:
    """Judge the champion on labelled matured applications (`target` column) once there are at
    least `min_rows` of them with both outcomes; otherwise not judged yet."""
    from sklearn.metrics import roc_auc_score

    rows = len(labelled)
    if not days:
        return RealisedPerformance(False, "no cohort after the training range has matured", 0, [])
    if rows < settings.min_rows:
        reason = f"{rows} matured applications, fewer than min_rows {settings.min_rows}"
        return RealisedPerformance(False, reason, rows, days)
    target = labelled["target"].to_numpy()
    if target.min() == target.max():
        return RealisedPerformance(False, "matured applications have one outcome only", rows, days)
    return RealisedPerformance(
        judged=True,
        reason="",
        rows=rows,
        days=days,
        roc_auc=float(roc_auc_score(target, prob)),
        bad_rate_among_approved=confusion_at_cutoff(target, prob, champion.cutoff)[
            "bad_rate_among_approved"
        ],
        promised_roc_auc=champion.promised["roc_auc"],
        promised_bad_rate=champion.promised["bad_rate_among_approved"],
        max_auc_drop=settings.max_auc_drop,
        max_bad_rate_rise=settings.max_bad_rate_rise,
    )
