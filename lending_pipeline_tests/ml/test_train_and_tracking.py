import datetime as dt

import numpy as np
import pandas as pd
import pytest

from lending_pipeline.ml import tracking
from lending_pipeline.ml.train import (
    SPLIT,
    fit_candidate,
    frame_digest,
    inputs,
    labelled,
    out_of_time_split,
    split_digests,
    split_parts,
)


def synthetic_frame(spec, days=12, per_day=120, seed=3):
    """A labelled feature frame with every model input, enough for a quick fit."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    frame = pd.DataFrame(
        {
            "application_id": [f"A{i}" for i in range(n)],
            "application_date": pd.Timestamp("2025-01-01")
            + pd.to_timedelta(np.repeat(np.arange(days), per_day), "D"),
        }
    )
    for name in spec.features.model_inputs:
        frame[name] = rng.random(n)
    for name, values in {
        "purpose": ["car", "medical"],
        "channel": ["web", "branch"],
        "employment_type": ["salaried", "retired"],
    }.items():
        frame[name] = rng.choice(values, n)
    for name in spec.protected_attributes:
        frame[name] = rng.choice(["a", "b"], n)
    logit = -2 + 3 * frame["debt_to_income"] + 2 * frame["utilization"]
    frame["target"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return out_of_time_split(frame, "application_date", 3, 3)


def test_labelled_keeps_only_matured_outcomes(spec):
    features = pd.DataFrame(
        {
            "application_id": ["A1", "A2", "A3"],
            "application_date": pd.to_datetime(["2025-01-01", "2025-02-20", "2025-01-02"]),
        }
    )
    outcomes = pd.DataFrame({"application_id": ["A1", "A2"], "default_flag": [1, 0]})
    out = labelled(spec, features, outcomes, dt.date(2025, 3, 10))  # horizon 2025-01-09
    assert out["application_id"].tolist() == ["A1"] and out["target"].tolist() == [1]


def test_split_is_out_of_time_and_refuses_too_few_days(spec):
    frame = synthetic_frame(spec)
    by_split = frame.groupby(SPLIT)["application_date"].agg(["min", "max"])
    assert by_split.loc["train", "max"] < by_split.loc["validation", "min"]
    assert by_split.loc["validation", "max"] < by_split.loc["test", "min"]
    assert frame.loc[frame[SPLIT] == "test", "application_date"].nunique() == 3
    with pytest.raises(ValueError, match="needs more than 6 days"):
        out_of_time_split(frame.head(120 * 5), "application_date", 3, 3)


@pytest.mark.parametrize("order", ["by date", "shuffled"])
def test_split_parts_are_the_rows_of_each_split(spec, order):
    frame = synthetic_frame(spec)
    if order == "shuffled":
        frame = frame.sample(frac=1.0, random_state=5)
    parts = split_parts(frame)
    for name, part in parts.items():
        expected = frame[frame[SPLIT] == name]
        assert len(part) > 0 and part.equals(expected)
    assert sum(len(p) for p in parts.values()) == len(frame)
    masks = {name: frame[frame[SPLIT] == name] for name in parts}
    assert split_digests(parts) == split_digests(masks)


def test_digest_changes_with_any_value(spec):
    frame = synthetic_frame(spec)
    assert frame_digest(frame) == frame_digest(frame.copy())
    changed = frame.copy()
    changed.loc[5, "utilization"] += 1e-9
    assert frame_digest(changed) != frame_digest(frame)


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic", "none"])
@pytest.mark.parametrize("kind", ["hist_gradient_boosting", "logistic_scorecard"])
def test_every_model_type_logs_and_loads_under_the_trusted_types(spec, tmp_path, kind, calibration):
    data = spec.model_dump()
    data["model"]["calibration"] = calibration
    spec = type(spec).model_validate(data)
    frame = synthetic_frame(spec)
    trained = fit_candidate(spec, frame, kind)
    assert 0 < trained.cutoff < 1
    config = tracking.TrackingConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment="test",
        artifact_location=(tmp_path / "artifacts").as_uri(),
        registered_model="test_pd",
    )
    example = inputs(spec, frame.head(20))
    with tracking.start_run(config, "test", {"purpose": "test"}):
        version, _ = tracking.log_model(config, trained.model, example, {"k": "v"})
    assert tracking.logged_or_load(config, version) is trained.model  # logged by this process
    loaded = tracking.load_model(config, version)
    np.testing.assert_allclose(
        loaded.predict_proba(example)[:, 1], trained.model.predict_proba(example)[:, 1]
    )
    assert tracking.version_tags(config, version)["k"] == "v"
    assert tracking.promote(config, version) is None
    assert tracking.alias_version(config, tracking.CHAMPION) == version
