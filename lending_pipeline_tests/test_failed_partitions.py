"""A failed day reads as failed everywhere; days without a partition are named plainly; the
CLI prints one line per failed check and full tracebacks for real errors only."""

import pandas as pd

from lending_pipeline.cli import main
from lending_pipeline.ml.synth import partition_path
from lending_pipeline_tests.conftest import day
from lending_pipeline_tests.defs.helpers import stored_rows


def materialize(capsys, *days):
    args = ["materialize", "--workers", "1"]
    for each in days:
        args += ["--partition", each]
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_failed_rerun_withdraws_the_stale_features(spec, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    code, out, _ = materialize(capsys, day())
    assert code == 0, out
    assert stored_rows(data_dir, "applicant_features", day()) > 0

    path = partition_path(data_dir, spec.source_by_name["bureau"], day())
    pd.read_csv(path, dtype=str).to_csv(path, sep=";", index=False)
    code, out, err = materialize(capsys, day())

    assert code == 1
    assert stored_rows(data_dir, "applicant_features", day()) is None  # withdrawn
    assert "applicant_features rows: 0 (from the 0 passed partitions)" in out
    assert f"failed partitions (no features): {day()}" in out
    lines = [line.strip() for line in out.splitlines() if "FAILED CHECK" in line]
    schema = next(line for line in lines if "validated_bureau_schema" in line)
    assert schema.startswith(f"FAILED CHECK validated_bureau_schema partition {day()}: ")
    assert "file 'landing/bureau/2025-03-03.csv'" in schema and "rule delimiter" in schema
    assert schema.endswith("[runbook docs/runbook.md#validated_source_schema]")
    assert len(lines) == 2  # the schema check and the expectations it left without rows
    assert "Stack Trace" not in out + err and "Traceback" not in out + err


def test_days_without_a_partition_are_named_plainly(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    code, out, err = materialize(capsys, "2024-12-31", "2999-01-01", day())
    assert code == 2
    assert f"2024-12-31: before the first partition {day()} (the first landed day;" in err
    assert "2999-01-01: after the last complete day" in err
    assert day() + ":" not in err and "Traceback" not in err and "invariant" not in err.lower()

    empty = tmp_path / "only_future"
    source = data_dir / "landing" / "applications" / f"{day()}.csv"
    future = empty / "landing" / "applications" / "2999-01-02.csv"
    future.parent.mkdir(parents=True)
    future.write_bytes(source.read_bytes())
    monkeypatch.setenv("LENDING_DATA_DIR", str(empty))
    code, out, _ = materialize(capsys)
    assert code == 1
    assert "landing files ignored for 1 day(s) without a partition:" in out
    assert "2999-01-02: after the last complete day" in out


def test_a_real_error_keeps_its_full_traceback(data_dir, tmp_path, monkeypatch, capsys):
    import lending_pipeline.defs.validation as validation

    def broken(*args, **kwargs):
        raise RuntimeError("validator exploded")

    monkeypatch.setattr(validation, "validate_days", broken)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    code, out, _ = materialize(capsys, day())
    assert code == 1
    errors = [line for line in out.splitlines() if "ERROR IN STEP" in line]
    assert errors and "RuntimeError: validator exploded" in errors[0]
    assert 'in broken\n    raise RuntimeError("validator exploded")' in out  # the user frame
    assert "FAILED CHECK" not in out
