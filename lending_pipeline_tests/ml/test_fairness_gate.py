"""A fairness gate that measured nothing is not a pass; protected attributes are banded."""

import numpy as np
import pandas as pd
import pytest
import yaml

from lending_pipeline.ml.evaluate import evaluate_gates, model_card, report
from lending_pipeline.ml.protected import band
from lending_pipeline.spec import SpecError, default_spec_path, load_spec


def spec_with(tmp_path, protected, bands=None, data=None):
    text = yaml.safe_load(default_spec_path().read_text())
    applications = next(s for s in text["sources"] if s["name"] == text["entity"]["source"])
    applications["columns"]["age"] = {"dtype": "int", "min": 18, "max": 100, "nullable": True}
    text["protected_attributes"] = protected
    text["proxies"] = [p for p in text.get("proxies", []) if p["attribute"] in protected]
    if bands is not None:
        text["protected_bands"] = bands
    if data is not None:
        text["data_origin"] = data
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(text))
    return load_spec(path)


def frame(n, seed=0, women=None):
    rng = np.random.default_rng(seed)
    target = (rng.random(n) < 0.2).astype(int)
    sex = rng.choice(["F", "M"], n) if women is None else ["F"] * women + ["M"] * (n - women)
    return pd.DataFrame(
        {
            "application_id": [f"A{i}" for i in range(n)],
            "target": target,
            "prob": np.clip(0.1 + 0.4 * target + rng.normal(0, 0.15, n), 0.001, 0.999),
            "age_band": rng.choice(["18-24", "25-34"], n),
            "sex": sex,
            "age": rng.integers(18, 80, n),
            "loan_amount": rng.uniform(1000, 20000, n),
        }
    )


def air_gate(spec, data):
    candidate = report(spec, data, data["prob"].to_numpy(), 0.3)
    gates = {g.gate: g for g in evaluate_gates(spec.gates, candidate, candidate, None)}
    return candidate, gates["min_adverse_impact_ratio"]


def test_a_small_split_where_no_two_groups_are_large_enough_fails_as_not_measurable(spec):
    data = frame(60, women=28)  # 28 women, 32 men: only the men reach min_group_size 30
    data["age_band"] = "25-34"
    _, gate = air_gate(spec, data)
    assert not gate.passed and gate.actual is None
    assert "not measurable" in gate.detail
    assert "sex has 1 group(s) of at least 30 (group sizes M: 32, F: 28)" in gate.detail
    assert "age_band has 1 group(s)" in gate.detail
    measured = frame(600)
    assert air_gate(spec, measured)[1].actual is not None


def test_a_continuous_protected_attribute_is_refused_without_bands(tmp_path):
    with pytest.raises(SpecError, match=r"'age' is numeric \(int\).*protected_bands"):
        spec_with(tmp_path, ["age", "sex"])
    with pytest.raises(SpecError, match="strictly increasing"):
        spec_with(tmp_path, ["age"], bands={"age": [40, 25]})
    with pytest.raises(SpecError, match="bands need a numeric column"):
        spec_with(tmp_path, ["sex"], bands={"sex": [1]})


def test_banded_ages_are_measured_where_raw_ages_measured_nothing(tmp_path):
    banded = spec_with(tmp_path, ["age"], bands={"age": [25, 40, 60]})
    data = frame(900, seed=3)
    candidate, gate = air_gate(banded, data)
    groups = candidate["fairness"]["age"]["adverse_impact"]["group_sizes"]
    assert set(groups) == {"< 25", "25 to < 40", "40 to < 60", ">= 60"}
    assert gate.actual is not None and "age=" in gate.detail
    np.testing.assert_array_equal(
        band([18, 25, 39.9, 60, None], [25, 40, 60]),
        np.array(["< 25", "25 to < 40", "25 to < 40", ">= 60", None], dtype=object),
    )


def test_the_card_lists_small_groups_with_counts_and_states_the_data_kind(tmp_path):
    real = spec_with(
        tmp_path, ["sex"], data={"kind": "public", "description": "Lender X loan book 2019-2023."}
    )
    data = frame(300, seed=1)
    data.loc[:11, "sex"] = "U"  # 12 applicants: a small group
    candidate, gate = air_gate(real, data)
    card = model_card(real, "4", {}, {"candidate": candidate, "baseline": candidate}, [gate], 0.3)
    assert "| sex | U | 12 |" in card and "n/a (small group: not gated)" in card
    assert "- sex: U (12)" in card
    assert "Data kind: public" in card and "Lender X loan book 2019-2023." in card
    assert "Synthetic" not in card
