"""The onboarding walk-through's spec (docs/spec.md): extracts without dates of their own, a
static reference table joined by key, renamed and namespaced columns; runs on data generated
in that shape with a spec and no code."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from lending_pipeline.defs.resources import arrow_to_pandas
from lending_pipeline.ml.ingest import ingest
from lending_pipeline.ml.synth_generic import generate_from_spec
from lending_pipeline.spec import SpecError, load_spec
from lending_pipeline_tests.defs.helpers import run_day, stored_rows

SMALL = Path(__file__).resolve().parents[1] / "lending_pipeline" / "specs" / "small_credit.yaml"
START = dt.date(2025, 4, 1)
KEY = b"small-credit-test-key-0123456789"


@pytest.fixture
def small(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("LENDING_DATA_DIR", str(data))
    monkeypatch.setenv("LENDING_PII_KEY", KEY.decode())
    spec = load_spec(SMALL)
    generate_from_spec(spec, data, START, 2, 60, as_of=dt.date(2025, 6, 1))
    return spec, data


def test_extracts_without_dates_renamed_and_namespaced_columns(small):
    spec, data = small
    day = "2025-04-02"
    history = arrow_to_pandas(ingest(spec.source_by_name["credit_history"], data, day, KEY).table)
    assert set(history["snapshot_date"]) == {day}  # the file's partition is its date
    assert history["bureau_score"].notna().all()  # `score` in the file, renamed
    employment = arrow_to_pandas(ingest(spec.source_by_name["employment"], data, day, KEY).table)
    assert {"emp_years", "emp_income", "emp_score"} <= set(employment.columns)
    assert employment["_ingest_error"].isna().all()
    regions = ingest(spec.source_by_name["regions"], data, day, KEY)
    assert regions.rows == 5 and regions.files[0].path == "reference/small/regions.csv"


def test_the_walkthrough_spec_runs_through_features(small, instance):
    spec, data = small
    run = run_day(spec, instance, "2025-04-02")
    assert run.success and not run.failed_checks, run.messages
    assert stored_rows(data, "validated_regions", "2025-04-02") == 5
    features = pd.read_parquet(data / "warehouse" / "applicant_features" / "2025-04-02.parquet")
    assert len(features) == 60
    assert features["unemployment_rate"].notna().all()  # static reference joined by key
    assert {"bureau_score", "emp_score", "burden", "age_band", "sex"} <= set(features.columns)
    assert "full_name" not in features.columns
    assert (features["snapshot_date"] == pd.Timestamp("2025-04-02")).all()


def test_joined_sources_sharing_a_column_name_are_told_to_rename(tmp_path):
    text = SMALL.read_text().replace("rename: {score: bureau_score}", "rename: {}")
    text = text.replace("bureau_score: {dtype", "emp_score: {dtype").replace(
        "    - bureau_score\n", ""
    )
    path = tmp_path / "clash.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="column 'emp_score' is also in source 'credit_history'"):
        load_spec(path)


def test_a_dataset_too_small_is_refused_naming_what_and_the_spec_fields(small, instance):
    from lending_pipeline.definitions import build_definitions
    from lending_pipeline.runs import run_training, summarize

    spec, data = small
    for day in ("2025-04-01", "2025-04-02"):
        assert run_day(spec, instance, day).success
    result = run_training(build_definitions(spec), instance, package=False)
    run = summarize(result)
    assert not run.success and run.failed_steps == ["training_set"]
    (problem,) = [p for p in run.problems if p.name == "training_set"]
    assert problem.kind == "refused" and not problem.traceback
    assert "training set too small to train meaningfully (120 matured applications)" in problem.what
    assert "days: 2 day(s) of matured applications; the out-of-time split needs at least 31" in (
        problem.what
    )
    assert "model.split.validation_days" in problem.what
    assert problem.runbook == "docs/runbook.md#training_set_too_small"


def test_split_sizes_defaults_and_fairness_groups_are_judged(small):
    from lending_pipeline.ml.sufficiency import split_problems

    spec, _ = small
    frame = pd.DataFrame(
        {
            "target": [0] * 290 + [1] * 10,
            "sex": ["F"] * 295 + ["M"] * 5,
            "age_band": ["30-44"] * 300,
        }
    )
    parts = {"train": frame, "validation": frame.head(50), "test": frame.head(120)}
    problems = split_problems(spec, parts)
    assert "split train: 10 defaults (bad), at least 20 needed" in problems[0]
    assert problems[1].startswith(
        "split validation: 50 rows, at least 100 needed: raise model.split.validation_days (now 15)"
    )
    assert "split test: 0 defaults (bad)" in problems[2]
    assert "fairness: protected attribute age_band" in problems[3]
    assert "fairness: protected attribute sex has fewer than two groups" in problems[4]
    assert "gates.min_group_size (20)" in problems[4] and "(largest: F: 120)" in problems[4]
    assert len(problems) == 5


def test_spec_init_drafts_a_spec_that_validates_the_files(small, tmp_path, capsys):
    from lending_pipeline.cli import main
    from lending_pipeline.ml.validation import validate_source

    _, data = small
    output = tmp_path / "draft.yaml"
    code = main(["spec", "init", "--from-files", str(data), "--data-dir", str(data),
                 "--output", str(output), "--name", "drafted"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "confirm: sources.applicants.columns.full_name: PII? (pii: true)" in out
    assert "confirm: sources.employment.rename: 'score' also in 'credit_history'" in out
    assert "confirm: protected_attributes: ['age_band', 'sex']" in out
    draft = load_spec(output)
    assert draft.entity.source == "applicants" and draft.entity.key == "applicant_id"
    assert draft.target.source == "outcomes" and draft.target.column == "bad"
    assert draft.source_by_name["regions"].static
    assert draft.source_by_name["credit_history"].date_from == "partition"
    assert {"age_band", "sex"} == set(draft.protected_attributes)
    assert not {"age_band", "sex", "full_name"} & set(draft.features.model_inputs)
    for source in draft.sources:  # the draft reads and validates the very files it came from
        raw = arrow_to_pandas(ingest(source, data, "2025-04-02", KEY).table)
        outcome = validate_source(raw, source, "2025-04-02", partition_dated=False)
        assert outcome.passed and outcome.quarantined_rows == 0, outcome.failure_summary()


def test_spec_init_on_parquet_files_finds_the_entity_and_the_label(tmp_path, capsys):
    from lending_pipeline.cli import main
    from lending_pipeline_tests.test_second_spec import SME

    sme = load_spec(SME)
    data = tmp_path / "sme"
    generate_from_spec(sme, data, START, 2, 30, as_of=dt.date(2025, 6, 1))
    output = tmp_path / "sme_draft.yaml"
    args = ["spec", "init", "--from-files", str(data), "--data-dir", str(data)]
    assert main([*args, "--output", str(output)]) == 0, capsys.readouterr().out
    draft = load_spec(output)
    assert (draft.entity.source, draft.entity.key) == ("requests", "request_id")
    assert (draft.target.source, draft.target.column) == ("repayments", "missed_payment")
    assert draft.source_by_name["requests"].format == "parquet"
    assert draft.source_by_name["requests"].columns["director_name"].pii
