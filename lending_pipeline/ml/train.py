"""Training: out-of-time split of matured applications, the model pipeline, calibration, cutoff.

The candidate is a scikit-learn Pipeline (preprocessing + gradient-boosted trees with the spec's
monotonic constraints, or a logistic-regression scorecard), seeded and deterministic. It is
calibrated on the validation split only, and the decision cutoff is chosen there too; the
out-of-time split is left untouched for evaluation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from lending_pipeline.ml.features import model_matrix
from lending_pipeline.ml.metrics import choose_cutoff
from lending_pipeline.spec import PipelineSpec

SPLITS = ("train", "validation", "test")
SPLIT = "_split"


@dataclass
class TrainedModel:
    model: CalibratedClassifierCV
    cutoff: float
    kind: str


def labelled(spec: PipelineSpec, features: pd.DataFrame, outcomes: pd.DataFrame, as_of: dt.date):
    """Applications whose outcome has matured by `as_of`, with the label as `target`."""
    key, date = spec.entity.key, spec.primary_source.date_column
    horizon = pd.Timestamp(as_of) - pd.Timedelta(days=spec.target.maturity_days)
    labels = outcomes[[key, spec.target.column]].rename(columns={spec.target.column: "target"})
    frame = features[features[date] <= horizon].merge(labels, on=key, how="inner")
    frame["target"] = frame["target"].astype(int)
    return frame.sort_values([date, key], kind="stable").reset_index(drop=True)


def out_of_time_split(
    frame: pd.DataFrame, date_column: str, validation_days: int, test_days: int
) -> pd.DataFrame:
    """Label each row train / validation / test by application date (the latest days last)."""
    days = np.sort(frame[date_column].dropna().unique())
    if len(days) < validation_days + test_days + 1:
        raise ValueError(
            f"out-of-time split needs more than {validation_days + test_days} days of matured "
            f"applications; there are {len(days)}"
        )
    test_start = days[-test_days]
    validation_start = days[-(test_days + validation_days)]
    split = np.where(
        frame[date_column] >= test_start,
        "test",
        np.where(frame[date_column] >= validation_start, "validation", "train"),
    )
    return frame.assign(**{SPLIT: split})


def frame_digest(frame: pd.DataFrame) -> str:
    """A stable content hash of a DataFrame (column names, types, order and values): SHA-256 of
    its Arrow IPC stream, hashed as it is written (the stream is never held in memory)."""
    table = pa.Table.from_pandas(frame, preserve_index=False).combine_chunks()
    sink = _HashingSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        writer.write_table(table)
    return sink.hash.hexdigest()


class _HashingSink:
    """A write-only file that hashes what is written to it."""

    closed = False

    def __init__(self):
        self.hash = hashlib.sha256()

    def write(self, data) -> int:
        self.hash.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def split_parts(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each split, by name (train, validation, test). A split whose rows are
    contiguous (the training set is sorted by date, and split by date) is a slice, not a copy."""
    parts = {}
    for name in SPLITS:
        rows = np.flatnonzero((frame[SPLIT] == name).to_numpy())
        contiguous = len(rows) > 0 and rows[-1] - rows[0] + 1 == len(rows)
        parts[name] = frame.iloc[rows[0] : rows[-1] + 1] if contiguous else frame.iloc[rows]
    return parts


def split_digests(parts: dict[str, pd.DataFrame]) -> dict[str, str]:
    """The content hash of each split's rows (`split_parts`)."""
    return {name: frame_digest(part) for name, part in parts.items()}


def column_roles(spec: PipelineSpec) -> tuple[list[str], list[str]]:
    derived = {f.name for f in spec.features.derived}
    categorical = [
        c
        for c in spec.features.model_inputs
        if c not in derived and spec.column(c).dtype in ("category", "bool")
    ]
    numeric = [c for c in spec.features.model_inputs if c not in categorical]
    return categorical, numeric


def build_pipeline(spec: PipelineSpec, kind: str | None = None) -> Pipeline:
    """The unfitted model pipeline the spec declares (or `kind` to override the model type)."""
    settings = spec.model
    kind = kind or settings.type
    categorical, numeric = column_roles(spec)
    if kind == "logistic_scorecard":
        prepare = ColumnTransformer(
            [
                ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
                (
                    "numeric",
                    Pipeline(
                        [
                            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                            ("scale", StandardScaler()),
                        ]
                    ),
                    numeric,
                ),
            ]
        )
        model = LogisticRegression(C=settings.scorecard_c, max_iter=2000)
        return Pipeline([("prepare", prepare), ("model", model)])
    prepare = ColumnTransformer(
        [
            (
                "categorical",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                ),
                categorical,
            ),
            ("numeric", "passthrough", numeric),
        ]
    )
    monotonic = [0] * len(categorical) + [settings.monotonic.get(c, 0) for c in numeric]
    model = HistGradientBoostingClassifier(
        categorical_features=list(range(len(categorical))),
        monotonic_cst=monotonic,
        random_state=settings.seed,
        **settings.params,
    )
    return Pipeline([("prepare", prepare), ("model", model)])


def inputs(spec: PipelineSpec, frame: pd.DataFrame) -> pd.DataFrame:
    return model_matrix(spec, frame)


def fit_candidate(spec: PipelineSpec, split: pd.DataFrame, kind: str | None = None) -> TrainedModel:
    """Fit on train, calibrate and choose the cutoff on validation."""
    settings = spec.model
    parts = split_parts(split)
    train, validation = parts["train"], parts["validation"]
    pipeline = build_pipeline(spec, kind).fit(inputs(spec, train), train["target"])
    method = settings.calibration
    if method == "none":
        calibrated = pipeline
    else:
        calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method=method).fit(
            inputs(spec, validation), validation["target"]
        )
    prob = calibrated.predict_proba(inputs(spec, validation))[:, 1]
    cutoff = choose_cutoff(
        validation["target"].to_numpy(),
        prob,
        max_bad_rate=settings.cutoff.max_bad_rate,
        target_approval_rate=settings.cutoff.target_approval_rate,
    )
    return TrainedModel(calibrated, float(cutoff), kind or settings.type)


def predict(spec: PipelineSpec, model, frame: pd.DataFrame) -> np.ndarray:
    """Probability of default for each row."""
    return model.predict_proba(inputs(spec, frame))[:, 1]
