"""The bad-file contract of docs/spec.md, held for every source of every shipped spec.

Cases are generated from the specs and `lending_pipeline.ml.damage.DAMAGES` (the table in the
docs is generated from the same list and checked here): each damage kind, applied to one
source's file for one day, must give the declared outcome, name its rule (and file and column),
reconcile rows in = validated + quarantined, and block downstream exactly when the day fails.
The ml functions are called directly; a handful of Dagster runs confirm the blocking.
"""

import datetime as dt
import shutil
from pathlib import Path

import pytest

from lending_pipeline.defs.resources import arrow_to_pandas
from lending_pipeline.ml.damage import ACCEPT, BY_KIND, DAMAGES, QUARANTINE, REFUSE, apply
from lending_pipeline.ml.damage import damage_table as render_table
from lending_pipeline.ml.expectations import partition_passes, run_expectations
from lending_pipeline.ml.ingest import IngestError, ingest
from lending_pipeline.ml.synth import generate_consumer_loans, partition_path
from lending_pipeline.ml.synth_generic import generate_from_spec
from lending_pipeline.ml.validation import COLUMN, RULE, validate_source
from lending_pipeline.spec import default_spec_path, load_spec
from lending_pipeline_tests.conftest import PII_KEY

ROOT = Path(__file__).resolve().parents[1]
SPECS = {
    "consumer_loan": default_spec_path(),
    "sme_loan": ROOT / "lending_pipeline" / "specs" / "sme_loan.yaml",
}
DAY = dt.date(2025, 3, 4)
KEY = PII_KEY.encode()


def _cases():
    for name, path in SPECS.items():
        spec = load_spec(path)
        for source in spec.sources:
            for damage in DAMAGES:
                if damage.applies_to(source, spec.entity.key):
                    yield pytest.param(
                        name, source.name, damage.kind, id=f"{name}-{source.name}-{damage.kind}"
                    )


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """One generated day per shipped spec (every source, outcomes matured)."""
    made = {}
    for name, path in SPECS.items():
        spec = load_spec(path)
        root = tmp_path_factory.mktemp(name)
        as_of = DAY + dt.timedelta(days=spec.target.maturity_days + 1)
        if name == "consumer_loan":
            generate_consumer_loans(spec, root, DAY, 1, 150, seed=3, as_of=as_of)
        else:
            generate_from_spec(spec, root, DAY, 1, 120, seed=3, as_of=as_of)
        made[name] = (spec, root)
    return made


def judge(spec, source, data_dir):
    """Ingest and validate one day of one source as the pipeline does: (ingested rows,
    validation outcome, whether the day passes every blocking check)."""
    result = ingest(source, data_dir, DAY.isoformat(), KEY)
    raw = arrow_to_pandas(result.table)
    outcome = validate_source(
        raw, source, DAY.isoformat(), partition_dated=source.name == spec.entity.source
    )
    expectations = run_expectations(outcome.valid, source.expectations, f"contract_{source.name}")
    passes = outcome.passed and partition_passes(expectations, len(outcome.valid), source.required)
    return result.rows, outcome, passes


_CLEAN: dict[tuple[str, str], int] = {}


def clean(templates, spec_name: str, source_name: str) -> int:
    """Rows of the undamaged day of one source, which must pass (judged once)."""
    if (spec_name, source_name) not in _CLEAN:
        spec, template = templates[spec_name]
        rows, outcome, passes = judge(spec, spec.source_by_name[source_name], template)
        assert passes, outcome.failure_summary()
        _CLEAN[spec_name, source_name] = rows
    return _CLEAN[spec_name, source_name]


@pytest.mark.parametrize("spec_name, source_name, kind", list(_cases()))
def test_bad_file_contract(templates, tmp_path, spec_name, source_name, kind):
    spec, template = templates[spec_name]
    source = spec.source_by_name[source_name]
    damage = BY_KIND[kind]
    data_dir = tmp_path / "data"
    shutil.copytree(template, data_dir)
    path = partition_path(data_dir, source, DAY.isoformat())
    clean_rows = clean(templates, spec_name, source_name)
    column = apply(damage, path, source, spec.entity.key)
    relative = str(path.relative_to(data_dir))

    expected = damage.outcome
    if kind in ("empty_file", "header_only") and not source.required:
        expected = ACCEPT
    if damage.parquet_rules and source.format == "parquet":
        with pytest.raises(IngestError) as refused:  # nothing readable: ingestion refuses
            judge(spec, source, data_dir)
        assert relative in str(refused.value)
        return

    rows_in, outcome, passes = judge(spec, source, data_dir)
    assert len(outcome.valid) + outcome.quarantined_rows == rows_in  # nothing lost
    summary = outcome.failure_summary()
    if expected == ACCEPT:
        assert passes, summary
        assert outcome.quarantined_rows == 0
        if kind not in ("empty_file", "header_only"):
            assert rows_in == clean_rows
        return
    rules = set(outcome.rule_counts) | ({"not_empty"} if "not_empty" in summary else set())
    assert rules & set(damage.rules), (rules, summary)
    if expected == REFUSE:
        assert not passes, summary  # downstream blocked
        assert relative in summary or source.files_for(DAY.isoformat()) in summary
        if column:
            assert f"column '{column}'" in summary
        return
    assert expected == QUARANTINE
    bad = outcome.quarantine
    assert len(bad) == damage.quarantined_rows(clean_rows)
    assert all(set(r.split(";")) & set(damage.rules) for r in bad[RULE]), bad[RULE].tolist()
    assert all(column in c.split(";") for c in bad[COLUMN]), bad[COLUMN].tolist()
    assert set(bad["_source_file"]) == {relative}
    over_share = outcome.quarantined_rows / rows_in > source.max_quarantine_share
    assert passes == (not over_share), summary  # blocked exactly when over the share
    if over_share:
        assert relative in summary and f"column '{column}'" in summary
        assert any(f"rule {rule}" in summary for rule in damage.rules), summary


def test_every_damage_kind_is_exercised_by_some_shipped_source():
    kinds = {case.values[2] for case in _cases()}
    assert kinds == set(BY_KIND)


def test_the_docs_table_is_the_contract():
    docs = (ROOT / "docs" / "spec.md").read_text()
    start = docs.index("<!-- damage-table -->") + len("<!-- damage-table -->")
    end = docs.index("<!-- /damage-table -->")
    assert docs[start:end].strip() == render_table()


@pytest.mark.parametrize(
    "source_name, kind, built",
    [
        ("bureau", "wrong_delimiter", False),
        ("income", "bom", True),
        ("applications", "formula", True),
    ],
)
def test_downstream_is_blocked_exactly_when_the_day_fails(
    spec, data_dir, instance, source_name, kind, built
):
    """A few real Dagster runs: refused files stop `applicant_features`; accepted files and
    quarantined rows within the share do not."""
    from lending_pipeline_tests.conftest import day
    from lending_pipeline_tests.defs.helpers import run_day, stored_rows

    source = spec.source_by_name[source_name]
    apply(BY_KIND[kind], partition_path(data_dir, source, day()), source, spec.entity.key)
    run = run_day(spec, instance, day())
    assert run.success == built, run.messages
    features = stored_rows(data_dir, "applicant_features", day())
    applications = stored_rows(data_dir, "validated_applications", day())
    assert (features is not None) == built
    if built:
        assert features == applications  # one row per valid application
    raw = stored_rows(data_dir, f"raw_{source_name}", day())
    assert (
        stored_rows(data_dir, f"validated_{source_name}", day())
        + stored_rows(data_dir, f"quarantine_{source_name}", day())
        == raw
    )
