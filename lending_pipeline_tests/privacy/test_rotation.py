"""Key rotation on a real Dagster instance: new data under the new key, the warehouse re-keyed by
the job, joins across the rotation working again."""

import csv
import json

import pandas as pd
import pyarrow as pa
import pytest

from lending_pipeline import cli
from lending_pipeline.ml import audit, keyring
from lending_pipeline.ml.pii import is_pseudonym, pseudonymise
from lending_pipeline.ml.synth import partition_path
from lending_pipeline_tests.conftest import PII_KEY, day
from lending_pipeline_tests.defs.helpers import run_day

NEW_KEY = "a-second-pii-key-0123456789"


def _landing_rows(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _warehouse(data_dir, asset, partition):
    return pd.read_parquet(data_dir / "warehouse" / asset / f"{partition}.parquet")


def _rotate(tmp_path, monkeypatch):
    ring = tmp_path / "keyring.json"
    ring.write_text(
        json.dumps(
            {
                "active": "2026-12",
                "keys": [
                    {"secret_env": "LENDING_PII_KEY"},
                    {"id": "2026-12", "secret_env": "PII_KEY_2026_12"},
                ],
            }
        )
    )
    monkeypatch.setenv("PII_KEY_2026_12", NEW_KEY)
    monkeypatch.setenv(keyring.KEYRING_ENV, str(ring))
    return keyring.load()


def test_layered_pseudonyms_rekey_to_what_the_new_key_writes():
    old = keyring.Keyring([("a", b"first-key-0123456789")])
    new = keyring.Keyring([("a", b"first-key-0123456789"), ("b", b"second-key-0123456789")])
    values = pa.array(["123-45-6789", None, "Jane Doe"])
    before = pseudonymise(values, old.pseudonymise).to_pylist()
    after = pseudonymise(values, new.pseudonymise).to_pylist()
    assert before[0].startswith("p_") and after[0].startswith("p1_") and after[1] is None
    assert [new.rekey(v) for v in before if v] == [v for v in after if v]
    assert new.rekey(after[0]) == after[0]  # already there: unchanged
    assert is_pseudonym(after[0]) and before[0] != after[0]
    assert before == pseudonymise(values, b"first-key-0123456789").to_pylist()  # single key
    with pytest.raises(ValueError):
        old.rekey(after[0])  # newer than its active key
    with pytest.raises(ValueError):
        new.rekey("Jane Doe")


def test_keyring_file_errors_name_the_key_never_the_secret(tmp_path, monkeypatch):
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"keys": [{"id": "k1", "secret_env": "MISSING_KEY"}]}))
    with pytest.raises(keyring.KeyringError, match=r"keys\[0\].*MISSING_KEY"):
        keyring.from_file(ring, {})
    ring.write_text(json.dumps({"keys": [{"id": "k1", "secret": "inline-secret-value"}]}))
    with pytest.raises(keyring.KeyringError) as error:
        keyring.from_file(ring, {})
    assert "inline-secret-value" not in str(error.value)
    ring.write_text(json.dumps({"active": "k9", "keys": [{"id": "k1", "secret_env": "K"}]}))
    with pytest.raises(keyring.KeyringError, match="k9"):
        keyring.from_file(ring, {"K": "0123456789abcdefXYZ"})
    single = keyring.load({"LENDING_PII_KEY": PII_KEY})
    assert single.active_id == keyring.fingerprint(PII_KEY.encode())
    assert PII_KEY not in json.dumps(single.describe())


def test_rotation_and_rekey_job_keep_joins_working(
    spec, data_dir, instance, tmp_path, monkeypatch, capsys
):
    source = spec.source_by_name["applications"]
    first = partition_path(data_dir, source, day(0))
    second = partition_path(data_dir, source, day(1))
    returning = _landing_rows(first)[0]  # the same person applies again the next day
    rows = _landing_rows(second)
    rows[0]["ssn"] = returning["ssn"]
    _write_rows(second, rows)

    assert run_day(spec, instance, day(0)).success
    ring = _rotate(tmp_path, monkeypatch)
    assert run_day(spec, instance, day(1)).success
    new_ssn = _warehouse(data_dir, "raw_applications", day(1))["ssn"]
    assert new_ssn.str.startswith("p1_").all()
    assert new_ssn.iloc[0] == ring.pseudonymise(returning["ssn"])
    old = _warehouse(data_dir, "validated_applications", day(0))
    assert old["ssn"].str.startswith("p_").all()
    assert not set(old["ssn"]) & set(new_ssn)  # the join is broken until the warehouse is re-keyed

    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    assert cli.main(["privacy", "rekey"]) == 0
    said = capsys.readouterr().out
    assert "re-keyed to 2026-12" in said and PII_KEY not in said and NEW_KEY not in said
    for asset in ("raw_applications", "validated_applications"):
        old = _warehouse(data_dir, asset, day(0))
        assert old["ssn"].str.startswith("p1_").all()
        new = _warehouse(data_dir, asset, day(1))
        joined = old.merge(new, on="ssn", suffixes=("_first", "_second"))
        assert len(joined) == 1, asset
        assert joined["application_id_first"].iloc[0] == returning["application_id"]
    untouched = _warehouse(data_dir, "raw_applications", day(1))
    assert untouched["ssn"].equals(new_ssn.astype(untouched["ssn"].dtype))
    runs = instance.get_runs()
    assert runs[0].job_name == "privacy_rekey_job"
    reader = audit.open_reader(data_dir)
    (rekeyed,) = [e.data for e in reader.entries() if e.kind == "pii_rekey"]
    reader.close()
    assert rekeyed["key_id"] == "2026-12" and rekeyed["files_rewritten"] >= 2
    assert rekeyed["run_id"] == runs[0].run_id

    assert cli.main(["privacy", "rekey"]) == 0  # idempotent: nothing left to change
    assert "0 of" in capsys.readouterr().out


def test_the_audit_key_may_not_be_a_pseudonymisation_key_of_the_keyring(tmp_path):
    from lending_pipeline.ml import audit

    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"keys": [{"secret_env": "K0"}, {"secret_env": "K1"}]}))
    env = {"K0": PII_KEY, "K1": NEW_KEY, keyring.KEYRING_ENV: str(ring)}
    with pytest.raises(audit.AuditKeyError, match="LENDING_PII_KEYRING") as error:
        audit.audit_key({**env, "LENDING_AUDIT_KEY": NEW_KEY})
    assert NEW_KEY not in str(error.value)
    assert audit.audit_key({**env, "LENDING_AUDIT_KEY": "a-separate-audit-key-0123"})
    assert NEW_KEY not in repr(keyring.from_file(ring, env).keys)
