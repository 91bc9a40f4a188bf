from pathlib import Path

import pytest
import yaml

from lending_pipeline.spec import DriftSpec, SpecError, default_spec_path, load_spec

SME = Path(__file__).resolve().parents[2] / "lending_pipeline" / "specs" / "sme_loan.yaml"


def test_shipped_specs_load():
    consumer = load_spec()
    assert consumer.name == "consumer_loan"
    assert consumer.primary_source.name == "applications"
    assert "age_band" in consumer.protected_attributes
    assert not set(consumer.protected_attributes) & set(consumer.features.model_inputs)
    sme = load_spec(SME)
    assert sme.entity.key == "request_id" and sme.sources[0].format == "parquet"
    assert sme.drift == DriftSpec()  # no drift section: the defaults apply
    assert consumer.drift.psi_retrain == 0.25 and consumer.drift.retrain_schedule.timezone == "UTC"


def test_env_var_selects_the_spec(monkeypatch):
    monkeypatch.setenv("LENDING_PIPELINE_SPEC", str(SME))
    assert load_spec().name == "sme_loan"


def test_digest_is_stable_and_content_sensitive(tmp_path):
    data = yaml.safe_load(default_spec_path().read_text())
    assert load_spec().digest == load_spec().digest
    data["features"]["freshness"]["max_days"] = 31
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_spec(path).digest != load_spec().digest


def write_variant(tmp_path, change):
    data = yaml.safe_load(default_spec_path().read_text())
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def source(data, name):
    return next(s for s in data["sources"] if s["name"] == name)


def drop_join_key(outcomes):
    outcomes["columns"].pop("application_id")
    outcomes["key"] = ["observation_date"]


BAD_SPECS = {
    "unknown column in expression": (
        lambda d: d["features"]["derived"].append({"name": "x", "expression": "incme * 2"}),
        "features.derived[9] (x).expression: unknown column 'incme'",
    ),
    "duplicate source": (
        lambda d: d["sources"].append(dict(source(d, "income"))),
        "duplicate source name 'income'",
    ),
    "min greater than max": (
        lambda d: source(d, "applications")["columns"]["loan_amount"].update(min=9, max=1),
        "sources[0] (applications).columns.loan_amount: min (9) is greater than max (1)",
    ),
    "protected attribute as model input": (
        lambda d: d["features"]["model_inputs"].append("sex"),
        "'sex' is a protected attribute and cannot be a model input",
    ),
    "protected attribute inside an expression": (
        lambda d: d["features"]["derived"].append(
            {"name": "proxy", "expression": "(age_band == '65+') * 2"}
        ),
        "'age_band' is a protected attribute",
    ),
    "pii as model input": (
        lambda d: d["features"]["model_inputs"].append("email"),
        "'email' is PII and cannot be a model input",
    ),
    "code in an expression": (
        lambda d: d["features"]["derived"].append(
            {"name": "evil", "expression": "__import__('os').getcwd()"}
        ),
        "features.derived[9] (evil).expression: unknown function",
    ),
    "files without a date placeholder": (
        lambda d: source(d, "bureau").update(files="landing/bureau/*.csv"),
        "files must contain the placeholder {date}",
    ),
    "unknown field": (
        lambda d: source(d, "income").update(fromat="csv"),
        "sources[2] (income).fromat: Extra inputs are not permitted",
    ),
    "key not declared": (
        lambda d: source(d, "income").update(key=["income_id"]),
        "key: column 'income_id' is not declared",
    ),
    "join key missing from a source": (
        lambda d: drop_join_key(source(d, "outcomes")),
        "join key 'application_id' (entity.key) is not one of its columns",
    ),
    "non-text pii": (
        lambda d: source(d, "applications")["columns"]["loan_amount"].update(pii=True),
        "pii columns are pseudonymised to text",
    ),
    "protected attribute that is pii": (
        lambda d: d["protected_attributes"].append("date_of_birth"),
        "protected_attributes[2]: 'date_of_birth' is PII",
    ),
    "column on a table expectation": (
        lambda d: source(d, "applications")["expectations"][1].update(column="loan_amount"),
        "applies to the table and takes no column",
    ),
    "drift warn tier not below retrain": (
        lambda d: d["drift"].update(psi_warn=0.3),
        "drift: psi_warn (0.3) must be below psi_retrain (0.25)",
    ),
    "drift min rows too small for its bins": (
        lambda d: d["drift"].update(min_rows=50),
        "drift: min_rows (50) must be at least 10 x bins (100)",
    ),
    "drift bad cron": (
        lambda d: d["drift"]["retrain_schedule"].update(cron="0 25 * * *"),
        "drift.retrain_schedule.cron: '0 25 * * *' is not a five-field cron string",
    ),
    "drift unknown timezone": (
        lambda d: d["drift"]["retrain_schedule"].update(timezone="Mars/Olympus"),
        "drift.retrain_schedule.timezone: unknown timezone 'Mars/Olympus'",
    ),
    "drift unknown field": (
        lambda d: d["drift"].update(psi_retrian=0.3),
        "drift.psi_retrian: Extra inputs are not permitted",
    ),
    "unknown expectation": (
        lambda d: source(d, "income")["expectations"].append(
            {"expectation": "expect_magic", "column": "stated_income"}
        ),
        "unknown expectation 'expect_magic'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_names_file_field_and_problem(tmp_path, case):
    change, message = BAD_SPECS[case]
    path = write_variant(tmp_path, change)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    text = str(error.value)
    assert str(path) in text
    assert message in text


def test_unreadable_and_non_mapping_specs(tmp_path):
    with pytest.raises(SpecError, match="cannot be read"):
        load_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(listing)
