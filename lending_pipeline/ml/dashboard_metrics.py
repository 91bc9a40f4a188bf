"""Custom Evidently metrics of the drift dashboard (`ml/dashboard.py`).

Imported only where a snapshot is computed: importing Evidently takes seconds. The Evidently UI
does not need these classes: a stored snapshot keeps each metric's parameters and values.
"""

from __future__ import annotations

from evidently.core.metric_types import (
    ByLabelCalculation,
    ByLabelMetric,
    ByLabelValue,
    SingleValue,
    SingleValueCalculation,
    SingleValueMetric,
)

from lending_pipeline.ml.dashboard import (
    SERVED,
    TOP_REASONS,
    decline_reason_shares,
    median_shift,
)
from lending_pipeline.ml.drift import _as_float, category_counts, numeric_psi, psi_from_counts


class QuantilePSI(SingleValueMetric):
    """PSI of a column with reference-quantile bins (`ml/drift.py`, the banking convention)."""

    column: str
    bins: int = 10
    categorical: bool = False


class QuantilePSICalculation(SingleValueCalculation[QuantilePSI]):
    def calculate(self, context, current_data, reference_data):
        m = self.metric
        cur = current_data.as_dataframe()[m.column]
        ref = reference_data.as_dataframe()[m.column]
        if m.categorical:
            psi = psi_from_counts(*category_counts(ref, cur))
        else:
            psi = numeric_psi(_as_float(ref), _as_float(cur), m.bins)
        return self.result(round(psi, 6))

    def display_name(self) -> str:
        return f"PSI of {self.metric.column}"


class PSITier(SingleValueMetric):
    """A tier's PSI threshold from the spec, drawn as a line next to the features' PSI."""

    tier: str
    psi: float


class PSITierCalculation(SingleValueCalculation[PSITier]):
    def calculate(self, context, current_data, reference_data):
        return self.result(self.metric.psi)

    def display_name(self) -> str:
        return f"psi_{self.metric.tier} threshold"


class MedianShift(SingleValueMetric):
    """Relative shift of a column's median: median today / reference median - 1."""

    column: str


class MedianShiftCalculation(SingleValueCalculation[MedianShift]):
    def calculate(self, context, current_data, reference_data):
        cur = _as_float(current_data.as_dataframe()[self.metric.column])
        ref = _as_float(reference_data.as_dataframe()[self.metric.column])
        return self.result(median_shift(ref, cur))

    def display_name(self) -> str:
        return f"Median shift of {self.metric.column}"


class DecisionShare(SingleValueMetric):
    """Share of the day's served decisions that were `decision`."""

    decision: str


class DecisionShareCalculation(SingleValueCalculation[DecisionShare]):
    def calculate(self, context, current_data, reference_data):
        served = context.additional_data[SERVED].as_dataframe()
        return self.result(round(float((served["decision"] == self.metric.decision).mean()), 6))

    def display_name(self) -> str:
        return f"{self.metric.decision} rate of served decisions"


class DeclineReasons(ByLabelMetric):
    """Share of the day's declines citing each of the `top` most frequent reason codes."""

    top: int = TOP_REASONS


class DeclineReasonsCalculation(ByLabelCalculation[DeclineReasons]):
    def calculate(self, context, current_data, reference_data):
        served = context.additional_data[SERVED].as_dataframe()
        shares = decline_reason_shares(served, self.metric.top)
        result = ByLabelValue(
            values={
                code: SingleValue(value=share, display_name=f"{code} share of declines")
                for code, share in shares.items()
            },
            display_name=self.display_name(),
        )
        result.set_metric_location(self.to_metric_config())
        return result

    def display_name(self) -> str:
        return "Most frequent decline reasons (share of declines)"
