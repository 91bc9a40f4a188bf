"""Onboarding a small dataset: the pipeline's out-of-time AUC against a plain scikit-learn model.

Generates a dataset in the shape of a spec (default: the walk-through's `small_credit.yaml`, a
few thousand applicants over a few months), runs the pipeline's own stages on it (ingestion,
validation, point-in-time features, matured labels, out-of-time split, the spec's model with
its calibration: the `ml/` functions the Dagster assets call), and fits a plain scikit-learn
logistic regression on the same split and the same columns (one-hot categories, median-imputed
and standardised numbers). Prints both out-of-time AUCs and their difference; the onboarding
target is a difference within 0.03.

    .venv/bin/python benchmarks/bench_onboarding.py [--days 90] [--per-day 30] [--spec PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lending_pipeline.defs.resources import arrow_to_pandas  # noqa: E402
from lending_pipeline.ml.features import build_features, model_matrix  # noqa: E402
from lending_pipeline.ml.ingest import ingest  # noqa: E402
from lending_pipeline.ml.sufficiency import days_problem, split_problems  # noqa: E402
from lending_pipeline.ml.synth_generic import generate_from_spec  # noqa: E402
from lending_pipeline.ml.train import (  # noqa: E402
    fit_candidate,
    labelled,
    out_of_time_split,
    predict,
    split_parts,
)
from lending_pipeline.ml.validation import validate_source  # noqa: E402
from lending_pipeline.spec import load_spec  # noqa: E402

TARGET_GAP = 0.03
START = dt.date(2025, 1, 6)
KEY = b"bench-onboarding-key-0123456789ab"


def pipeline_tables(spec, data_dir: Path, days: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and validated outcomes of every day, through the pipeline's stages."""
    features, outcomes = [], []
    for day in days:
        valid = {}
        for source in spec.sources:
            raw = arrow_to_pandas(ingest(source, data_dir, day, KEY).table)
            outcome = validate_source(
                raw, source, day, partition_dated=source.name == spec.entity.source
            )
            if not outcome.passed:
                raise SystemExit(f"{source.name} {day} failed: {outcome.failure_summary()}")
            valid[source.name] = outcome.valid
        outcomes.append(valid.pop(spec.target.source))
        features.append(build_features(spec, valid).features)
    return pd.concat(features, ignore_index=True), pd.concat(outcomes, ignore_index=True)


def plain_model(spec, train: pd.DataFrame) -> Pipeline:
    matrix = model_matrix(spec, train)
    categorical = [c for c in matrix.columns if matrix[c].dtype == object]
    numeric = [c for c in matrix.columns if c not in categorical]
    prepare = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                categorical,
            ),
        ]
    )
    model = Pipeline([("prepare", prepare), ("model", LogisticRegression(max_iter=2000))])
    return model.fit(matrix, train["target"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "lending_pipeline/specs/small_credit.yaml"))
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--per-day", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    spec = load_spec(args.spec)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        as_of = START + dt.timedelta(days=args.days + spec.target.maturity_days + 1)
        generate_from_spec(spec, data_dir, START, args.days, args.per_day, args.seed, as_of)
        days = [(START + dt.timedelta(days=i)).isoformat() for i in range(args.days)]
        features, outcomes = pipeline_tables(spec, data_dir, days)
    frame = labelled(spec, features, outcomes, as_of)
    problem = days_problem(spec, frame)
    if problem:
        print(f"refused: {problem}")
        return 1
    split = spec.model.split
    frame = out_of_time_split(
        frame, spec.primary_source.date_column, split.validation_days, split.test_days
    )
    parts = split_parts(frame)
    problems = split_problems(spec, parts)
    if problems:
        print("refused: " + "; ".join(problems))
        return 1
    test = parts["test"]
    pipeline_auc = roc_auc_score(
        test["target"], predict(spec, fit_candidate(spec, frame).model, test)
    )
    plain = plain_model(spec, parts["train"])
    plain_auc = roc_auc_score(test["target"], plain.predict_proba(model_matrix(spec, test))[:, 1])
    gap = abs(pipeline_auc - plain_auc)
    print(
        f"{spec.name}: {len(frame)} matured applicants over {args.days} days "
        f"(train {len(parts['train'])}, validation {len(parts['validation'])}, test {len(test)}; "
        f"default rate {frame['target'].mean():.1%}) in {time.perf_counter() - began:.0f}s"
    )
    print(f"  pipeline ({spec.model.type}) out-of-time AUC  {pipeline_auc:.4f}")
    print(f"  plain scikit-learn logistic regression  {plain_auc:.4f}")
    verdict = "within" if gap <= TARGET_GAP else "OUTSIDE"
    print(f"  difference {gap:.4f}: {verdict} the {TARGET_GAP} target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
