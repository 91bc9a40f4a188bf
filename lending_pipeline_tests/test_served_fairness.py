"""Fairness of served decisions: decisions of record from the audit log, attributes joined by
pseudonym, the daily `served_fairness` asset and its check on a real instance."""

import json

import dagster as dg
import pandas as pd
import pytest

from lending_pipeline.defs.common import validated_key
from lending_pipeline.defs.resources import partition_path
from lending_pipeline.defs.served_fairness import SERVED_AIR, build_served_fairness_assets
from lending_pipeline.ml import audit
from lending_pipeline.ml.pii import Pseudonymiser
from lending_pipeline.ml.served_fairness import (
    attach_attributes,
    served_decisions,
    served_fairness,
)
from lending_pipeline.spec import PipelineSpec

DAY = "2025-04-02"


def decision(i: int, decision: str, inputs: dict) -> dict:
    return {
        "request_id": f"r{i}",
        "caller": "client",
        "decision": decision,
        "inputs": inputs,
        "model": {"name": "m", "version": "1"},
        "probability_of_default": 0.1,
        "reason_codes": [],
        "score": 600,
    }


def write_log(data_dir, batches: dict[str, list[dict]], overrides=()):
    """Decision entries dated per day (as the service logs them) and admin overrides."""
    store = audit.open_store(data_dir)
    patch = pytest.MonkeyPatch()
    try:
        for day, entries in batches.items():
            patch.setattr(audit, "now", lambda day=day: f"{day}T09:00:00.000000+00:00")
            store.append("decision", entries)
        patch.undo()
        for request_id, new in overrides:
            store.append(
                "override",
                [{"request_id": request_id, "decision": new, "caller": "admin", "reason": "r"}],
            )
    finally:
        patch.undo()
        store.close()


def biased(n_f=120, n_m=120, approve_f=0.45, approve_m=0.75, offset=0, **extra) -> list[dict]:
    rows = []
    for sex, n, share in (("F", n_f, approve_f), ("M", n_m, approve_m)):
        for j in range(n):
            verdict = "approve" if j < round(n * share) else "decline"
            rows.append(decision(offset + len(rows), verdict, {"sex": sex, **extra}))
    return rows


def entries_of(data_dir):
    reader = audit.open_reader(data_dir)
    try:
        return reader.entries()
    finally:
        reader.close()


def test_decision_of_record_counts_overrides_and_only_the_day(tmp_path):
    write_log(
        tmp_path,
        {
            "2025-04-01": [decision(900, "approve", {"sex": "F"})],
            DAY: [
                decision(1, "decline", {"sex": "F"}),
                decision(2, "approve", {"sex": "M"}),
                decision(3, "refer", {}),
            ],
        },
        overrides=[("r1", "approve")],
    )
    frame = served_decisions(entries_of(tmp_path), DAY, ["sex"])
    assert list(frame["request_id"]) == ["r1", "r2", "r3"]
    assert list(frame["decision"]) == ["approve", "approve", "refer"]
    assert list(frame["overridden"]) == [True, False, False]
    assert frame["sex"].isna().tolist() == [False, False, True]


def test_served_impact_ratio_judged_measurable_and_not():
    rows = pd.DataFrame(
        [
            {"decision": d["decision"], "overridden": False, "sex": d["inputs"]["sex"]}
            for d in biased()
        ]
    )
    result = served_fairness(rows, DAY, ["sex"], 30, 100, 0.8)
    assert result.judged and result.measurable and not result.passed
    assert result.min_ratio == pytest.approx(0.45 / 0.75, abs=0.01)
    assert (result.min_attribute, result.min_group) == ("sex", "F")
    assert "BELOW the limit 0.8" in result.describe()
    assert served_fairness(rows, DAY, ["sex"], 30, 100, 0.5).passed

    few = served_fairness(rows, DAY, ["sex"], 30, 1000, 0.8)
    assert not few.judged and few.passed and "fewer than min_decisions 1000" in few.describe()

    small = served_fairness(rows, DAY, ["sex"], 200, 100, 0.8)
    assert small.judged and not small.measurable and not small.passed
    assert "NOT MEASURABLE" in small.describe() and "sex: F 120, M 120" in small.describe()


def test_attributes_missing_from_requests_are_joined_by_pseudonym():
    pseudonym = Pseudonymiser(b"k" * 32)
    decisions = pd.DataFrame(
        {
            "request_id": ["r1", "r2", "r3"],
            "decision": ["approve", "decline", "approve"],
            "overridden": False,
            "sex": [None, None, "M"],
            "_join": [pseudonym("111-11-1111"), pseudonym("222-22-2222"), None],
        }
    )
    lookup = pd.DataFrame(
        {"sex": ["F", "M"]}, index=[pseudonym("111-11-1111"), pseudonym("222-22-2222")]
    )
    joined = attach_attributes(decisions, lookup, ["sex"])
    assert joined["sex"].tolist() == ["F", "M", "M"] and "_join" not in joined


def with_served(spec: PipelineSpec, **settings) -> PipelineSpec:
    data = spec.model_dump()
    data["drift"]["served_fairness"] = {**data["drift"]["served_fairness"], **settings}
    return PipelineSpec.model_validate(data)


def materialize(spec, instance, day=DAY):
    assets = build_served_fairness_assets(spec)
    result = dg.materialize(assets, instance=instance, partition_key=day, raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    return result, evaluation


def test_asset_fails_its_check_on_biased_served_decisions(spec, data_dir, instance):
    fair = biased(approve_f=0.7, approve_m=0.72)
    write_log(data_dir, {DAY: biased(), "2025-04-03": fair})
    result, evaluation = materialize(spec, instance)
    assert result.success and evaluation.check_name == SERVED_AIR.name
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "sex=F" in evaluation.description
    report = json.loads((data_dir / "reports" / "served_fairness" / f"{DAY}.json").read_text())
    assert report["decisions"] == 240 and report["attributes"]["sex"]["sizes"] == {
        "F": 120,
        "M": 120,
    }
    _, next_day = materialize(spec, instance, "2025-04-03")
    assert next_day.passed and "within the limit" in next_day.description
    _, empty = materialize(spec, instance, "2025-04-05")
    assert empty.passed and "no decisions were served" in empty.description


def test_asset_joins_attributes_by_pseudonymised_column(spec, data_dir, instance):
    pseudonym = Pseudonymiser(b"p" * 32)
    served = []
    for i, d in enumerate(biased()):
        d["inputs"] = {"ssn": pseudonym(f"ssn-{i}")}  # the request carried no protected attribute
        served.append((d, "F" if i < 120 else "M"))
    write_log(data_dir, {DAY: [d for d, _ in served]})
    table = pd.DataFrame(
        {
            "ssn": [d["inputs"]["ssn"] for d, _ in served],
            "sex": [sex for _, sex in served],
            "age_band": "25-34",
        }
    )
    path = partition_path(data_dir, validated_key("applications"), "2025-04-01")
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)

    _, without_join = materialize(spec, instance)
    assert not without_join.passed and "NOT MEASURABLE" in without_join.description
    _, joined = materialize(with_served(spec, join_on="ssn"), instance)
    assert not joined.passed and "sex=F" in joined.description
    assert joined.metadata["measurable"].value is True


def test_join_column_must_be_in_the_attribute_source(spec):
    with pytest.raises(ValueError, match="join_on: 'pull_date' is not a column of source"):
        with_served(spec, join_on="pull_date")


def test_no_audit_log_is_not_judged_and_creates_nothing(spec, data_dir, instance):
    _, evaluation = materialize(spec, instance)
    assert evaluation.passed and "no audit log" in evaluation.description
    assert not audit.default_path(data_dir).exists()


def test_entries_failing_their_mac_are_left_out_and_fail_the_check(spec, data_dir, instance):
    import sqlite3

    write_log(data_dir, {DAY: biased(approve_f=0.7, approve_m=0.72)})
    db = sqlite3.connect(audit.default_path(data_dir), isolation_level=None)
    db.execute(f"DROP TRIGGER IF EXISTS {audit.TABLE}_no_update")  # as someone who can write it
    db.execute(
        f"UPDATE {audit.TABLE} SET payload = replace(payload, 'decline', 'approve') "
        "WHERE payload LIKE '%\"F\"%' AND payload LIKE '%decline%'"
    )
    db.close()
    key = audit.audit_key()
    frame = served_decisions(entries_of(data_dir), DAY, ["sex"], key=key)
    assert frame.attrs["unauthentic"] == 36 and len(frame) == 240 - 36
    assert (frame.loc[frame["sex"] == "F", "decision"] == "approve").all()
    _, evaluation = materialize(spec, instance)
    assert not evaluation.passed
    assert evaluation.description.startswith("36 audit entries fail their MAC")
    assert evaluation.metadata["decisions"].value == 204
