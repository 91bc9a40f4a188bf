"""Erasure on real audit stores (SQLite; PostgreSQL as the insert-only role): the applicant's
rows gone from landing and warehouse, their audited inputs unreadable, `audit verify` passing,
readers showing them as erased, nothing of theirs left in clear."""

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest

from lending_pipeline import cli
from lending_pipeline.ml import audit, data_keys, keyring
from lending_pipeline.ml.monitoring import served_features
from lending_pipeline.ml.scoring import records_from_tables
from lending_pipeline.ml.synth import build_tables
from lending_pipeline.serving.requests import RequestValidator
from lending_pipeline_tests.conftest import AUDIT_KEY, DAYS, PER_DAY, PII_KEY, START, day
from lending_pipeline_tests.defs.helpers import run_day

PII = ("full_name", "ssn", "date_of_birth", "email", "address")


def requests(spec):
    """The landing template's applications as scoring requests (raw PII included)."""
    tables = {}
    built = build_tables(START, DAYS, PER_DAY, seed=11, maturity_days=spec.target.maturity_days)
    for name, table in built.tables.items():
        frame = table.to_pandas()
        for column, declared in spec.source_by_name[name].columns.items():
            if declared.dtype == "date":
                frame[column] = pd.to_datetime(frame[column])
        tables[name] = frame
    return records_from_tables(spec, tables)


def audit_decisions(spec, data_dir, raw_requests, url=None):
    """Append decisions the way the scoring service does: validated, pseudonymised, sealed."""
    validate = RequestValidator(spec, keyring.load())
    keys = data_keys.open_store(data_dir)
    seal = data_keys.Sealer(keys, spec.entity.key)
    store = audit.open_store(data_dir, url)
    entries = []
    for raw in raw_requests:
        entries.append(
            {
                "caller": "loan-origination",
                "decision": "approve",
                "model": {"name": "consumer_loan_pd", "version": "1"},
                "reason_codes": [],
                "score": 700,
                "input_hmac": validate.input_hmac(raw),
                "inputs": validate(raw),
                "pii_key": validate_key_id(),
                "probability_of_default": 0.1,
                "request_id": uuid.uuid4().hex,
            }
        )
    written = store.append("decision", seal(entries))
    store.checkpoint_head()
    store.close()
    keys.close()
    return [json.loads(e.payload)["request_id"] for e in written]


def validate_key_id():
    return keyring.load().active_id


def everything(data_dir) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path, monkeypatch):
    if request.param == "sqlite":
        yield None
        return
    pytest.importorskip("psycopg")
    from lending_pipeline.ml.audit_pg import setup_postgres
    from lending_pipeline_tests.postgres import Cluster

    cluster = Cluster()
    try:
        name = cluster.new_database()
        role = f"writer_{uuid.uuid4().hex[:8]}"
        setup_postgres(cluster.url(name), role, "writer-password-for-tests")
        url = cluster.url(name, role, "writer-password-for-tests")
        monkeypatch.setenv(audit.AUDIT_URL_ENV, url)
        yield url
    finally:
        cluster.close()


def test_erasure_leaves_the_chain_verifiable_and_the_inputs_unreadable(
    spec, data_dir, instance, store_url, monkeypatch, capsys
):
    assert run_day(spec, instance, day(0)).success
    raw = [r for r in requests(spec) if r["application_date"] == day(0)][:5]
    erased, kept = raw[0], raw[1]
    applicant = erased[spec.entity.key]
    request_ids = audit_decisions(spec, data_dir, raw, store_url)
    assert erased["ssn"].encode() in everything(data_dir)  # in the landing file, in clear

    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    code = cli.main(
        ["erase", "--applicant", applicant, "--by", "dpo", "--reason", "art. 17 request 42"]
    )
    said = capsys.readouterr()
    assert code == 0, said.err
    assert "1 data key(s) destroyed" in said.out
    for value in (*[erased[c] for c in PII], applicant):
        assert value not in said.out + said.err

    # the chain still verifies, against its head checkpoints
    assert cli.main(["audit", "verify"]) == 0, capsys.readouterr().err
    assert "audit log intact" in capsys.readouterr().out
    reader = audit.open_reader(data_dir, store_url)
    entries = list(reader.entries())
    reader.close()
    (erasure,) = [e.data for e in entries if e.kind == "erasure"]
    assert erasure["by"] == "dpo (CLI)" and erasure["reason"] == "art. 17 request 42"
    assert erasure["applicant_ref"] and erasure["landing_rows_removed"] >= 1
    assert erasure["warehouse_rows_removed"] >= 3  # raw, validated, features at least

    # the erased applicant's inputs are unreadable; the others' are not
    sealed = data_keys.open_inputs_reader(data_dir)
    decisions = {e.data["request_id"]: e.data for e in entries if e.kind == "decision"}
    gone, other = decisions[request_ids[0]], decisions[request_ids[1]]
    assert "inputs" not in gone and sealed.inputs(gone) is None
    assert sealed.why(gone).startswith("erased")
    assert sealed.inputs(other)[spec.entity.key] == kept[spec.entity.key]
    assert sealed.inputs(other)["ssn"].startswith("p_")
    frame, probabilities = served_features(spec, entries, entries[-1].time[:10], sealed.inputs)
    assert len(frame) == len(probabilities) == len(raw) - 1
    sealed.close()

    # `audit decision` shows them as erased, without failing
    assert cli.main(["audit", "decision", request_ids[0]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["inputs"].startswith("erased") and shown["decision"] == "approve"
    assert cli.main(["audit", "decision", request_ids[1]]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"]["ssn"].startswith("p_")

    # nothing of the applicant is left in clear or under a key that still exists
    text = everything(data_dir)
    others = [r for r in requests(spec) if r[spec.entity.key] != applicant]
    unique = [c for c in PII if all(r[c] != erased[c] for r in others)]
    assert "ssn" in unique and "email" in unique
    for column in unique:
        assert erased[column].encode() not in text, column
        assert kept[column].encode() in text  # the other applicants' landing rows stay
    warehouse = data_dir / "warehouse"
    for path in warehouse.rglob("*.parquet"):
        frame = pd.read_parquet(path)
        if spec.entity.key in frame:
            assert applicant not in set(frame[spec.entity.key].astype(str)), path

    # a second request finds nothing left, and is recorded too
    assert cli.main(["erase", "--applicant", applicant, "--reason", "repeat"]) == 0
    assert "0 data key(s) destroyed, 0 landing and 0 warehouse" in capsys.readouterr().out
    assert cli.main(["audit", "verify"]) == 0

    # no PII in the Dagster instance (run config, event logs, metadata) of the privacy runs
    pii = {r[c] for r in raw for c in PII}
    runs = [r for r in instance.get_runs() if r.job_name == "privacy_erase_job"]
    assert len(runs) == 2 and all(r.is_success for r in runs)
    for run in runs:
        text = " ".join(str(e) for e in instance.all_logs(run.run_id))
        assert "data_keys_destroyed" in text and not [v for v in pii if v in text]
    for path in Path(instance.root_directory).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [v for v in pii if v.encode() in data], path


def test_destroyed_keys_leave_no_copy_in_the_key_store_files(tmp_path):
    store = data_keys.DataKeyStore(tmp_path / "keys.db")
    keys = store.keys_for([f"app-{i}" for i in range(50)])
    secret = keys["app-7"][1]
    assert store.keys_for(["app-7"])["app-7"] == keys["app-7"]  # the same key when asked again
    files = lambda: b"".join(p.read_bytes() for p in tmp_path.iterdir())  # noqa: E731
    assert secret in files()
    assert store.destroy("app-7") == [keys["app-7"][0]]
    assert secret not in files()
    assert keys["app-8"][1] in files()
    assert store.destroyed(keys["app-7"][0]) and store.key(keys["app-7"][0]) is None
    assert store.keys_for(["app-7"])["app-7"][0] != keys["app-7"][0]  # a new key, a new id
    store.close()


def test_sealed_inputs_are_bound_to_their_request(tmp_path):
    store = data_keys.DataKeyStore(tmp_path / "keys.db")
    seal = data_keys.Sealer(store, "application_id")
    entry = {"request_id": "r1", "inputs": {"application_id": "a1", "x": 1}, "input_hmac": "h"}
    (sealed,) = seal([dict(entry, inputs=dict(entry["inputs"]))])
    reader = data_keys.InputsReader(store)
    assert reader.open(sealed) == {"input_hmac": "h", "inputs": {"application_id": "a1", "x": 1}}
    moved = dict(sealed, request_id="r2")  # moved to another entry: refused
    with pytest.raises(data_keys.DataKeyError):
        reader.open(moved)
    assert reader.inputs(moved) is None and reader.why(moved).startswith("unreadable")
    legacy = {"request_id": "r0", "inputs": {"x": 2}}
    assert reader.inputs(legacy) == {"x": 2} and reader.why(legacy) == "in clear"
    assert data_keys.InputsReader(None).inputs(sealed) is None
    store.close()


def test_audit_key_and_pii_key_are_not_in_any_entry(spec, data_dir):
    audit_decisions(spec, data_dir, requests(spec)[:3])
    text = everything(data_dir)
    assert AUDIT_KEY.encode() not in text and PII_KEY.encode() not in text


def test_shadow_pairs_read_sealed_inputs_and_survive_an_erasure(tmp_path):
    from lending_pipeline.ml.shadow_record import paired

    keys = data_keys.DataKeyStore(tmp_path / "keys.db")
    seal = data_keys.Sealer(keys, "application_id")
    store = audit.open_store(tmp_path)
    for i in range(3):
        inputs = {"application_id": f"a{i}", "sex": "F"}
        decision = {"decision": "approve", "inputs": inputs, "request_id": f"r{i}"}
        decision |= {"model": {"version": "2"}, "probability_of_default": 0.1}
        store.append("decision", seal([decision]))
        shadow = {"decision": "refer", "model": {"version": "1"}, "request_id": f"r{i}"}
        store.append("shadow", [shadow | {"probability_of_default": 0.3}])
    keys.destroy("a1")
    entries = list(store.entries())
    store.close()
    pairs = paired(entries, "application_id", ["sex"], data_keys.InputsReader(keys).inputs)
    assert list(pairs["key"]) == ["a0", None, "a2"] and list(pairs["sex"]) == ["F", None, "F"]
    assert list(pairs["challenger_decision"]) == ["refer"] * 3
    keys.close()
