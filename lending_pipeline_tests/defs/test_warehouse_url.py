"""The warehouse behind one path abstraction (UPath over fsspec): the same job against another
filesystem URL (fsspec's in-memory one standing in for an object store) stores the same
partitions, and nothing in the local folder."""

import uuid

import pyarrow.parquet as pq
from upath import UPath

from lending_pipeline.defs.resources import WAREHOUSE_URL_ENV
from lending_pipeline.ml.synth import partition_path
from lending_pipeline.runs import warehouse_rows
from lending_pipeline_tests.conftest import day
from lending_pipeline_tests.defs.helpers import landing_rows, run_day


def contents(root: UPath) -> dict[str, tuple[int, str]]:
    found = {}
    for path in sorted(root.rglob("*.parquet"), key=str):
        table = pq.read_table(path.path, filesystem=path.fs)
        found[str(path.relative_to(root))] = (table.num_rows, table.to_pandas().to_json())
    return found


def test_the_warehouse_url_replaces_the_local_folder(spec, data_dir, instance, monkeypatch):
    assert run_day(spec, instance, day()).success
    local = contents(UPath(data_dir / "warehouse"))

    url = f"memory://lending-{uuid.uuid4().hex[:8]}/warehouse"
    monkeypatch.setenv(WAREHOUSE_URL_ENV, url)
    elsewhere = data_dir.parent / "elsewhere"
    monkeypatch.setenv("LENDING_DATA_DIR", str(elsewhere))
    (elsewhere).mkdir()
    for source in spec.sources:  # the same landing files, in another data dir
        target = partition_path(elsewhere, source, day())
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(partition_path(data_dir, source, day()).read_bytes())
    run = run_day(spec, instance, day())
    assert run.success, run.messages

    assert not (elsewhere / "warehouse").exists()
    assert contents(UPath(url)) == local
    rows = warehouse_rows(elsewhere, [day()])
    applications = partition_path(elsewhere, spec.source_by_name["applications"], day())
    assert rows["raw_applications"] == landing_rows(applications) > 0
