"""Scoring applications with a trained model: features, probability, points, decision, reasons.

A scoring request carries one application in the raw shape the spec declares: the columns of
every feature source, flat (the entity key once). Its features are derived by the same
`features.derive` as in training. The probability comes from the fitted model; for the gradient
boosted pipeline the categorical encoding is applied with the fitted encoder's categories, the
trees are evaluated by `forest.Forest` (compiled loops over all trees) and the fitted calibrator
maps the raw score (a DataFrame round trip and one call per tree would cost ~10 ms per
request); any other model goes through its own `predict_proba`.
Parity tests hold both ways to the batch scores of training.

Reason codes: for each model input, the applicant's value is replaced by a reference value (the
median, or the most frequent category, among applicants who repaid in the training split) and the
fall in probability of default is that input's contribution (computed for refer and decline
only). For the boosted trees, only the splits on an input along each row's path are revisited.
The inputs with the largest positive contributions, at most `max_reason_codes`, give the
adverse-action reasons; ties resolve in spec order, so the same input always gets the same
reasons.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.calibration import _SigmoidCalibration

from lending_pipeline.ml.decision import APPROVE, decide, decide_many
from lending_pipeline.ml.features import derive, join_sources, model_matrix
from lending_pipeline.ml.train import SPLIT, column_roles
from lending_pipeline.spec import ColumnSpec, PipelineSpec

if TYPE_CHECKING:
    from lending_pipeline.ml.forest import Forest

REFERENCE_SAMPLE = 50_000
REFERENCE_ARTIFACT = "reason_reference.json"


def request_columns(spec: PipelineSpec) -> dict[str, ColumnSpec]:
    """Columns of a scoring request: every feature source's columns, the entity key once."""
    columns: dict[str, ColumnSpec] = {}
    for source in spec.feature_sources:
        for name, column in source.columns.items():
            columns.setdefault(name, column)
    return columns


def column_arrays(columns: dict[str, ColumnSpec], records: list[dict]) -> dict[str, np.ndarray]:
    """Typed arrays of request records' columns (`request_columns`), as training sees them
    (`as_array`): numbers and booleans float64, dates datetime64, text object."""
    arrays = {}
    for name, column in columns.items():
        values = [record.get(name) for record in records]
        if column.dtype in ("float", "int", "bool"):
            arrays[name] = np.array(values, dtype="float64")  # None becomes NaN
        elif column.dtype == "date":
            arrays[name] = _dates(values)
        else:
            arrays[name] = np.array(values, dtype=object)
    return arrays


_EPOCH = dt.date(1970, 1, 1).toordinal()
_NAT = np.datetime64("NaT").astype(np.int64)


def _dates(values: list) -> np.ndarray:
    """Dates (date objects or ISO text; None for missing) as datetime64[ns]. Date objects go
    through their day number: NumPy converts them one by one, ~2 microseconds each."""
    if all(value is None or type(value) is dt.date for value in values):
        days = [_NAT if value is None else value.toordinal() - _EPOCH for value in values]
        return np.array(days, dtype=np.int64).astype("datetime64[D]").astype("datetime64[ns]")
    return np.array(values, dtype="datetime64[ns]")


def records_from_tables(spec: PipelineSpec, tables: dict[str, pd.DataFrame]) -> list[dict]:
    """Applications as scoring requests: the point-in-time join of the feature sources, one
    flat JSON-ready record per application (dates as ISO text, missing values as None)."""
    joined = join_sources(spec, tables, include_pii=True)
    columns = request_columns(spec)
    out = {}
    for name, column in columns.items():
        values = joined[name]
        if column.dtype == "date":
            values = pd.to_datetime(values).dt.strftime("%Y-%m-%d")
        elif column.dtype == "int":
            values = values.astype("Int64").astype(object)
        out[name] = values.astype(object).where(values.notna(), None).tolist()
    return [dict(zip(out, row, strict=True)) for row in zip(*out.values(), strict=True)]


def reference_values(spec: PipelineSpec, frame: pd.DataFrame) -> dict[str, float | str | None]:
    """Per model input, the reason-code reference: median (numeric) or most frequent category
    among training applicants who repaid (a seeded sample of at most `REFERENCE_SAMPLE`): the
    rows of `frame` in the train split, or all of them when it has no split column.
    Aggregates only: no applicant's own values."""
    good = frame["target"].to_numpy() == 0
    if SPLIT in frame.columns:
        good &= (frame[SPLIT] == "train").to_numpy()
    rows = pd.Series(np.flatnonzero(good))
    if len(rows) > REFERENCE_SAMPLE:  # the rows good.sample(n, random_state=0) would pick
        rows = rows.sample(n=REFERENCE_SAMPLE, random_state=0)
    matrix = model_matrix(spec, frame.iloc[rows.to_numpy()])
    categorical, _ = column_roles(spec)
    reference: dict[str, float | str | None] = {}
    for name in spec.features.model_inputs:
        column = matrix[name].dropna()
        if column.empty:
            reference[name] = None
        elif name in categorical:
            counts = column.value_counts()
            labels = [str(value) for value in counts.index]
            top = counts.index[np.lexsort((labels, -counts.to_numpy()))[0]]
            reference[name] = top.item() if hasattr(top, "item") else top
        else:
            reference[name] = float(column.median())
    return reference


class Decision(NamedTuple):
    probability: float
    score: int
    decision: str
    reasons: list[dict[str, str]]


class Scorer:
    """A fitted model ready to score requests: probability, points, decision, reason codes."""

    def __init__(self, spec: PipelineSpec, model, cutoff: float, reference: dict):
        if spec.scoring is None:
            raise ValueError(f"spec '{spec.name}' has no scoring section")
        self.spec = spec
        self.model = model
        self.cutoff = float(cutoff)
        self.inputs = list(spec.features.model_inputs)
        self._columns = request_columns(spec)
        self.categorical, _ = column_roles(spec)
        self._fast = _fast_path(model, self.inputs, self.categorical)
        self._reference_row = self._encode_reference(reference)

    @property
    def fast(self) -> bool:
        """True when scoring bypasses the pipeline's DataFrame step (boosted trees)."""
        return self._fast is not None

    def features(self, records: list[dict]) -> dict[str, np.ndarray]:
        columns = column_arrays(self._columns, records)
        return derive(self.spec, columns, len(records))

    def matrix(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Model inputs as a float matrix in the fast path's encoding, in spec order."""
        rows = len(next(iter(features.values())))
        out = np.empty((rows, len(self.inputs)), dtype="float64")
        for j, name in enumerate(self.inputs):
            out[:, j] = self._encode(name, features[name])
        return out

    def _encode(self, name: str, values) -> np.ndarray:
        if name not in self.categorical:
            return np.asarray(values, dtype="float64")
        if self._fast is None:
            codes = {c: i for i, c in enumerate(self._category_list(name))}
        else:
            codes = self._fast.codes[name]
        return np.array([codes.get(v, np.nan) for v in values], dtype="float64")

    def _category_list(self, name: str) -> list:
        column = self.spec.column(name)
        return [False, True] if column.dtype == "bool" else list(column.allowed or [])

    def _decode(self, name: str, codes: np.ndarray) -> np.ndarray:
        names = self._fast.categories[name] if self._fast is not None else self._category_list(name)
        return np.array([None if np.isnan(c) else names[int(c)] for c in codes], dtype=object)

    def _encode_reference(self, reference: dict) -> np.ndarray:
        row = {name: np.array([reference.get(name)], dtype=object) for name in self.inputs}
        for name in self.inputs:
            if name not in self.categorical:
                value = reference.get(name)
                row[name] = np.array([np.nan if value is None else value], dtype="float64")
        return self.matrix(row)[0]

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """Probability of default per row of the encoded matrix."""
        if self._fast is not None:
            return self._fast.probabilities(matrix)
        frame = pd.DataFrame(
            {
                name: (
                    self._decode(name, matrix[:, j]) if name in self.categorical else matrix[:, j]
                )
                for j, name in enumerate(self.inputs)
            }
        )
        return self.model.predict_proba(model_matrix(self.spec, frame))[:, 1]

    def score(self, records: list[dict]) -> list[Decision]:
        """Decisions for request records, with reason codes for refer and decline (only those
        need the variations)."""
        matrix = self.matrix(self.features(records))
        probability = self.probabilities(matrix)
        decisions = decide_many(probability, self.cutoff, self.spec.scoring.decline_above_pd)
        adverse = [i for i, d in enumerate(decisions) if d != APPROVE]
        reasons = []
        if adverse:
            reasons = self._reasons(self._contributions(matrix[adverse], probability[adverse]))
        by_row = dict(zip(adverse, reasons, strict=True))
        points = self.points(probability).tolist()
        return [
            Decision(p, points[i], d, by_row.get(i, []))
            for i, (p, d) in enumerate(zip(probability.tolist(), decisions, strict=True))
        ]

    def decide(self, probability: float) -> str:
        """The decision rule (`decision.decide`): decline above the spec's limit, approve below
        the cutoff, refer from the cutoff (inclusive) up to the limit."""
        return decide(probability, self.cutoff, self.spec.scoring.decline_above_pd)

    def points(self, probability: np.ndarray) -> np.ndarray:
        """Scores on the spec's points scale (integers, clipped to its range)."""
        scale = self.spec.scoring.points
        p = np.clip(probability, 1e-9, 1 - 1e-9)
        score = scale.base_score + scale.pdo / math.log(2) * np.log((1 - p) / p / scale.base_odds)
        return np.rint(np.clip(score, scale.min_score, scale.max_score)).astype(int)

    def _contributions(self, matrix: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """Per row and input, the fall in probability when the input is set to its reference
        value (exactly 0 when it already is)."""
        if self._fast is not None:
            return self._fast.contributions(matrix, self._reference_row)
        rows, k = matrix.shape
        reference = self._reference_row[None, :]
        same = (matrix == reference) | (np.isnan(matrix) & np.isnan(reference))
        varied = np.repeat(matrix, k, axis=0)
        column = np.tile(np.arange(k), rows)
        varied[np.arange(rows * k), column] = self._reference_row[column]
        contribution = probability[:, None] - self.probabilities(varied).reshape(rows, k)
        return np.where(same, 0.0, contribution)

    def _reasons(self, contribution: np.ndarray) -> list[list[dict]]:
        """Per row, the inputs whose reference value lowers the probability most."""
        table = self.spec.scoring.reason_codes
        limit = self.spec.scoring.max_reason_codes
        out = []
        for row in contribution:
            order = np.argsort(-row, kind="stable")
            chosen = [j for j in order[:limit] if row[j] > 1e-9] or [int(order[0])]
            out.append(
                [
                    {
                        "code": table[self.inputs[j]].code,
                        "feature": self.inputs[j],
                        "text": table[self.inputs[j]].text,
                    }
                    for j in chosen
                ]
            )
        return out


@dataclass
class _TreesPath:
    """The boosted trees and calibrator of a fitted pipeline, called on a NumPy matrix."""

    order: list[int]
    codes: dict[str, dict[str, int]]
    categories: dict[str, list[str]]
    forest: Forest
    calibrator: object | None

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        return self.calibrate(
            self.forest.decision_function(np.ascontiguousarray(matrix[:, self.order]))
        )

    def contributions(self, matrix: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Per row and input (spec order), the fall in probability when the input is set to
        its reference value."""
        raw, change = self.forest.deltas(matrix[:, self.order], reference[self.order])
        fall = self.calibrate(raw)[:, None] - self.calibrate(raw[:, None] + change)
        out = np.empty_like(fall)
        out[:, self.order] = fall
        return out

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Probability of default from raw log-odds (the fitted calibrator, if any)."""
        if self.calibrator is None:
            return expit(raw)
        if isinstance(self.calibrator, _SigmoidCalibration):  # its predict, without the checks
            return expit(-(self.calibrator.a_ * raw + self.calibrator.b_))
        return self.calibrator.predict(raw)


def _fast_path(model, inputs: list[str], categorical: list[str]) -> _TreesPath | None:
    """The NumPy path for a (calibrated) boosted-trees pipeline, or None for other models."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline

    from lending_pipeline.ml.forest import Forest  # compiled code: imported only to score

    calibrator = None
    pipeline = model
    if isinstance(model, CalibratedClassifierCV):
        if len(model.calibrated_classifiers_) != 1:
            return None
        fitted = model.calibrated_classifiers_[0]
        calibrator = fitted.calibrators[0]
        pipeline = fitted.estimator
        if isinstance(pipeline, FrozenEstimator):
            pipeline = pipeline.estimator
    if not isinstance(pipeline, Pipeline) or not isinstance(
        pipeline[-1], HistGradientBoostingClassifier
    ):
        return None
    encoder = pipeline[0].named_transformers_["categorical"]
    fitted = encoder.categories_ if categorical else []
    categories = {
        name: [c for c in values if not pd.isna(c)]
        for name, values in zip(categorical, fitted, strict=True)
    }
    numeric = [name for name in inputs if name not in categorical]
    return _TreesPath(
        order=[inputs.index(name) for name in categorical + numeric],
        codes={name: {c: i for i, c in enumerate(v)} for name, v in categories.items()},
        categories=categories,
        forest=Forest(pipeline[-1]),
        calibrator=calibrator,
    )
