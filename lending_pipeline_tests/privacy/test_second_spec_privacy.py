"""Rotation and erasure follow the spec: the small-business product (entity key `request_id`,
Parquet landing files, its own PII columns) re-keyed and erased with the same commands."""

import datetime as dt
import json

import pandas as pd
import pyarrow.parquet as pq

from lending_pipeline import cli
from lending_pipeline.ml import keyring
from lending_pipeline.ml.synth_generic import generate_from_spec
from lending_pipeline.spec import load_spec
from lending_pipeline_tests.defs.helpers import run_day
from lending_pipeline_tests.test_second_spec import SME

DAY = "2025-04-02"


def test_sme_rekey_and_erasure(tmp_path, monkeypatch, instance, capsys):
    data = tmp_path / "data"
    monkeypatch.setenv("LENDING_DATA_DIR", str(data))
    monkeypatch.setenv("LENDING_PII_KEY", "another-test-key-0123456789")
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    spec = load_spec(SME)
    generate_from_spec(spec, data, dt.date(2025, 4, 1), 2, 80, as_of=dt.date(2025, 6, 1))
    assert run_day(spec, instance, DAY).success
    validated = data / "warehouse" / "validated_loan_requests" / f"{DAY}.parquet"
    pii = [c for s in spec.sources for c in s.pii_columns]
    assert pd.read_parquet(validated)[pii[0]].str.startswith("p_").all()

    ring = tmp_path / "ring.json"
    keys = [{"secret_env": "LENDING_PII_KEY"}, {"id": "sme-2", "secret_env": "SME_KEY_2"}]
    ring.write_text(json.dumps({"active": "sme-2", "keys": keys}))
    monkeypatch.setenv("SME_KEY_2", "sme-second-key-0123456789")
    monkeypatch.setenv(keyring.KEYRING_ENV, str(ring))
    assert cli.main(["privacy", "rekey", "--spec", str(SME)]) == 0
    frame = pd.read_parquet(validated)
    assert all(frame[c].dropna().str.startswith("p1_").all() for c in pii)

    applicant = str(frame[spec.entity.key].iloc[0])
    code = cli.main(
        ["erase", "--spec", str(SME), "--applicant", applicant, "--by", "dpo", "--reason", "r"]
    )
    assert code == 0, capsys.readouterr().err
    assert "0 data key(s) destroyed" in capsys.readouterr().out  # never scored: no key
    for path in (data / "landing").rglob("*.parquet"):
        assert applicant not in set(pq.read_table(path)[spec.entity.key].to_pylist()), path
    for path in (data / "warehouse").rglob("*.parquet"):
        table = pq.read_table(path)
        if spec.entity.key in table.column_names:
            assert applicant not in set(map(str, table[spec.entity.key].to_pylist())), path
    assert len(pd.read_parquet(validated)) == len(frame) - 1
    assert cli.main(["audit", "verify"]) == 0
