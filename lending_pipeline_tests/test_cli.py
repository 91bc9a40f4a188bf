import datetime as dt

import pytest
import yaml

from lending_pipeline.cli import main
from lending_pipeline.spec import default_spec_path


def test_spec_command(capsys, tmp_path):
    assert main(["spec"]) == 0
    assert "spec 'consumer_loan' is valid" in capsys.readouterr().out
    data = yaml.safe_load(default_spec_path().read_text())
    data["sources"][0]["max_quarantine_share"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["spec", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "sources[0] (applications).max_quarantine_share" in err


def test_generate_with_scenario_and_corruption(tmp_path, capsys):
    end = dt.date(2025, 5, 10)
    code = main(
        [
            "generate",
            "--data-dir",
            str(tmp_path),
            "--days",
            "3",
            "--per-day",
            "50",
            "--end",
            end.isoformat(),
            "--scenario",
            "utilization_spike",
            "--corrupt",
            "empty_file",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "over 3 days (2025-05-08 to 2025-05-10)" in out
    assert (tmp_path / "landing" / "applications" / "2025-05-10.csv").stat().st_size == 0
    assert (tmp_path / "landing" / "bureau" / "2025-05-08.csv").stat().st_size > 0
    assert not list((tmp_path / "landing").glob("outcomes/*.csv"))  # nothing matured yet


def test_generate_rejects_unknown_scenario(tmp_path):
    with pytest.raises(SystemExit):
        main(["generate", "--data-dir", str(tmp_path), "--scenario", "moon_landing"])


def test_materialize_command_runs_the_daily_job(data_dir, tmp_path, monkeypatch, capsys):
    from lending_pipeline_tests.conftest import day

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    code = main(["materialize", "--partition", day(), "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "materialized 1 partitions of 'consumer_loan'" in out and "1 passed every check" in out
    assert (data_dir / "warehouse" / "applicant_features" / f"{day()}.parquet").exists()
    assert (tmp_path / "home" / "dagster.yaml").read_text().startswith("telemetry:")


def test_generate_from_a_start_date_writes_the_given_number_of_days(tmp_path, capsys):
    args = ["generate", "--data-dir", str(tmp_path), "--start", "2025-03-01", "--days", "2"]
    assert main([*args, "--per-day", "20"]) == 0
    assert "over 2 days (2025-03-01 to 2025-03-02)" in capsys.readouterr().out
    assert (
        main(
            [
                "generate",
                "--data-dir",
                str(tmp_path),
                "--start",
                "2025-03-05",
                "--end",
                "2025-03-01",
            ]
        )
        == 2
    )


def test_generate_can_corrupt_with_any_kind_of_the_bad_file_table(tmp_path, capsys):
    args = ["generate", "--data-dir", str(tmp_path), "--days", "1", "--per-day", "20"]
    args += ["--end", "2025-05-10", "--corrupt", "wrong_delimiter", "--corrupt-source", "bureau"]
    assert main(args) == 0
    assert "corrupted" in capsys.readouterr().out
    header = (tmp_path / "landing" / "bureau" / "2025-05-10.csv").read_text().splitlines()[0]
    assert ";" in header and "," not in header
    assert main([*args[:-4], "--corrupt", "moon_dust"]) == 2
    assert "unknown corruption 'moon_dust'" in capsys.readouterr().out
