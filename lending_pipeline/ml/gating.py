"""Judging one registered model version on the out-of-time split, and checking the judgement.

`evaluation_reports` scores the candidate, the champion and a logistic scorecard baseline on the
test split. `rescore_differences` is the integrity check: the model loaded back *from the
registry* re-scores the stored out-of-time rows and the gated metrics must equal those logged;
`fingerprint_differences` compares the version's recorded spec, code, configuration and data
digests with those of the evaluation. `judge_version` does all of it for a registered version
and writes its gate record (`promotion.record_gates`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lending_pipeline.ml import promotion, tracking
from lending_pipeline.ml.evaluate import (
    GATED_METRICS,
    GateResult,
    evaluate_gates,
    min_adverse_impact,
    report,
)
from lending_pipeline.ml.train import build_pipeline, frame_digest, inputs, split_parts
from lending_pipeline.spec import PipelineSpec


def evaluation_reports(
    spec: PipelineSpec,
    train: pd.DataFrame,
    test: pd.DataFrame,
    cutoff: float,
    candidate,
    champion=None,
) -> tuple[dict[str, dict | None], np.ndarray]:
    """Score reports of the candidate, the baseline and (if any) the champion at one cutoff;
    and the candidate's probabilities (every model's in `evaluation_probabilities`)."""
    reports, probs = evaluation_probabilities(spec, train, test, cutoff, candidate, champion)
    return reports, probs["candidate"]


def evaluation_probabilities(
    spec: PipelineSpec,
    train: pd.DataFrame,
    test: pd.DataFrame,
    cutoff: float,
    candidate,
    champion=None,
) -> tuple[dict[str, dict | None], dict[str, np.ndarray]]:
    """Score reports and out-of-time probabilities of the candidate, the baseline and (if any)
    the champion."""
    test_inputs = inputs(spec, test)

    def score(model) -> np.ndarray:
        return model.predict_proba(test_inputs)[:, 1]

    probs = {"candidate": score(candidate)}
    reports: dict[str, dict | None] = {"candidate": report(spec, test, probs["candidate"], cutoff)}
    baseline = build_pipeline(spec, "logistic_scorecard")
    baseline.fit(inputs(spec, train), train["target"])
    probs["baseline"] = score(baseline)
    reports["baseline"] = report(spec, test, probs["baseline"], cutoff)
    reports["champion"] = None
    if champion is not None:
        probs["champion"] = score(champion)
        reports["champion"] = report(spec, test, probs["champion"], cutoff)
    return reports, probs


def stored_rows(spec: PipelineSpec, test: pd.DataFrame, prob: np.ndarray) -> pd.DataFrame:
    """What is kept of the out-of-time rows to check the evaluation later: the model inputs
    (derived features, no raw PII), the outcome, the protected attributes, the exposure and
    the probability the candidate gave."""
    keep = [spec.entity.key, "target", *spec.protected_attributes]
    if spec.model.exposure_column:
        keep.append(spec.model.exposure_column)
    stored = test[list(dict.fromkeys(keep))].reset_index(drop=True)
    model_inputs = inputs(spec, test).reset_index(drop=True)
    for name in model_inputs.columns:
        if name not in stored.columns:
            stored[name] = model_inputs[name]
    stored["prob"] = prob
    return stored


def rescore_differences(
    spec: PipelineSpec,
    model,
    stored: pd.DataFrame,
    logged: dict,
    cutoff: float,
    tol: float = 1e-9,
) -> dict[str, tuple[float, float]]:
    """Re-score the stored rows with `model` (loaded back from the registry) and recompute the
    gated metrics (ROC-AUC, KS, ECE, lowest adverse impact ratio); those that differ from the
    logged ones, as (logged, recomputed). A probability that changed is named too."""
    prob = model.predict_proba(inputs(spec, stored))[:, 1]
    recomputed = report(spec, stored, prob, cutoff)
    pairs = {name: (logged[name], recomputed[name]) for name in GATED_METRICS}
    pairs["min_adverse_impact_ratio"] = (
        min_adverse_impact(logged)[0],
        min_adverse_impact(recomputed)[0],
    )
    out = {n: p for n, p in pairs.items() if not math.isclose(*p, rel_tol=0, abs_tol=tol)}
    drift = float(np.max(np.abs(prob - stored["prob"].to_numpy()))) if len(prob) else 0.0
    if drift > tol:
        out["max_probability_change"] = (0.0, drift)
    return out


def fingerprint_differences(
    config: tracking.TrackingConfig, version: str, expected: dict[str, str]
) -> dict[str, tuple[str, str]]:
    """Recorded fingerprints of a version (its tags, and its run's `cutoff` and `model_type`
    params) that differ from `expected`, as (recorded, expected)."""
    recorded = dict(tracking.version_tags(config, version))
    params = tracking.version_run(config, version).data.params
    for name in ("cutoff", "model_type"):
        if name in params:
            recorded[name] = params[name]
    out = {}
    for name, value in expected.items():
        have = recorded.get(name)
        if name == "cutoff" and have is not None:
            same = math.isclose(float(have), float(value), rel_tol=0, abs_tol=1e-12)
        else:
            same = have == str(value)
        if not same:
            out[name] = (have, str(value))
    return out


def judge_version(
    spec: PipelineSpec,
    config: tracking.TrackingConfig,
    version: str,
    split: pd.DataFrame,
    cutoff: float,
    evaluated_by: str,
    champion_version: str | None = None,
) -> tuple[list[GateResult], dict, dict]:
    """Evaluate a registered version on the split's test rows, check the evaluation by
    re-scoring from the registry, and record its gates; (gates, integrity differences, record)."""
    parts = split_parts(split)
    train, test = parts["train"], parts["test"].reset_index(drop=True)
    model = tracking.load_model(config, version)
    champion = None if champion_version is None else tracking.load_model(config, champion_version)
    reports, prob = evaluation_reports(spec, train, test, cutoff, model, champion)
    gates = evaluate_gates(
        spec.gates, reports["candidate"], reports["baseline"], reports["champion"]
    )
    differences = rescore_differences(
        spec, model, stored_rows(spec, test, prob), reports["candidate"], cutoff
    )
    passed = {g.gate: g.passed for g in gates} | {promotion.INTEGRITY_GATE: not differences}
    record = promotion.record_gates(config, version, passed, frame_digest(test), evaluated_by)
    return gates, differences, record
