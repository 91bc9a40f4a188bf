"""Daily partitions start where the spec says, or on the first landed day."""

import datetime as dt

import yaml

from lending_pipeline.defs.common import daily_partitions
from lending_pipeline.partitions import last_complete_day, partition_start
from lending_pipeline.runs import landed_partitions
from lending_pipeline.spec import default_spec_path, load_spec
from lending_pipeline_tests.conftest import DAYS, START, day


def test_shipped_spec_starts_on_the_first_landed_day(spec, data_dir):
    assert spec.partitions.start_date is None
    keys = daily_partitions(spec).get_partition_keys()
    assert keys[0] == START.isoformat()
    assert keys[-1] == last_complete_day().isoformat()
    assert landed_partitions(spec, data_dir) == [day(i) for i in range(DAYS)]


def test_a_start_date_in_the_spec_wins(tmp_path, data_dir):
    data = yaml.safe_load(default_spec_path().read_text())
    data["partitions"] = {"start_date": day(1)}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    assert partition_start(spec, data_dir) == START + dt.timedelta(days=1)
    assert daily_partitions(spec).get_first_partition_key() == day(1)
    assert landed_partitions(spec, data_dir) == [day(i) for i in range(1, DAYS)]


def test_nothing_landed_starts_on_the_last_complete_day(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("LENDING_DATA_DIR", str(tmp_path / "empty"))
    assert partition_start(spec, tmp_path / "empty") == last_complete_day()
    keys = daily_partitions(spec).get_partition_keys()
    assert keys == [last_complete_day().isoformat()]


def test_a_day_landed_today_is_not_a_partition_yet(spec, data_dir):
    today = dt.datetime.now(dt.UTC).date().isoformat()
    folder = data_dir / "landing" / "applications"
    (folder / f"{today}.csv").write_text((folder / f"{day()}.csv").read_text())
    assert partition_start(spec, data_dir) == START
    assert today not in landed_partitions(spec, data_dir)
