"""The embedded profile's event log (`lending_pipeline.event_log`): Dagster's SQLite event log
with open connections. What Dagster reads back is what was written, across processes; a watched
run (the UI's live log) hears of events committed to its write-ahead log; open files stay
bounded; commits do not wait for an fsync; a batch of events leaves what storing them one by
one leaves."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from lending_pipeline.event_log import OPEN_DATABASES, LocalEventLogStorage
from lending_pipeline_tests.conftest import local_profile


def entry(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level="INFO",
        user_message=message,
        run_id=run_id,
        timestamp=time.time(),
        step_key=None,
        job_name=None,
        dagster_event=None,
    )


def messages(storage, run_id: str) -> list[str]:
    return [r.event_log_entry.user_message for r in storage.get_records_for_run(run_id).records]


def test_the_local_profile_uses_it_with_wal_and_no_fsync_per_commit(instance):
    storage = instance.event_log_storage
    assert isinstance(storage, LocalEventLogStorage)
    storage.store_event(entry("run-a", "first"))
    with storage.run_connection("run-a") as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


DAYS = ["2025-03-03", "2025-03-04", "2025-03-05"]


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2025-03-01"))
def counted(context: dg.AssetExecutionContext) -> int:
    return len(context.partition_key)


def test_materializations_written_by_another_process_read_back_per_partition(instance, tmp_path):
    """Runs in a child process on the same instance, while this process holds its connections
    open: every partition's materialization is read back here."""
    dg.materialize([counted], instance=instance, partition_key=DAYS[0])
    script = tmp_path / "child.py"
    script.write_text(
        "import dagster as dg\n"
        "from lending_pipeline_tests.test_event_log import DAYS, counted\n"
        "instance = dg.DagsterInstance.get()\n"
        "for day in DAYS[1:]:\n"
        "    dg.materialize([counted], instance=instance, partition_key=day)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = instance.fetch_materializations(counted.key, limit=10).records
    assert sorted(r.partition_key for r in records) == DAYS
    assert len(instance.get_runs()) == 3


def test_a_watched_run_hears_of_events_committed_to_its_write_ahead_log(instance):
    writer = instance.event_log_storage
    writer.store_event(entry("run-w", "before the watch"))  # creates the shard
    reader = LocalEventLogStorage(writer._base_dir)  # another storage: the UI's
    heard, arrived = [], threading.Event()

    def callback(event, _cursor):
        heard.append(event.user_message)
        arrived.set()

    cursor = str(reader.get_records_for_run("run-w").cursor)
    reader.watch("run-w", cursor, callback)
    try:
        time.sleep(0.5)  # the observer is scheduled
        writer.store_event(entry("run-w", "while watched"))
        assert arrived.wait(timeout=30), "no callback for an event committed while watched"
        assert heard == ["while watched"]
    finally:
        reader.end_watch("run-w", callback)
        reader.dispose()


def test_open_databases_stay_bounded(instance):
    storage = instance.event_log_storage
    for number in range(OPEN_DATABASES + 6):
        storage.store_event(entry(f"run-{number}", "hello"))
    for number in range(OPEN_DATABASES + 6):
        assert messages(storage, f"run-{number}") == ["hello"]
    base = Path(storage._base_dir).resolve()
    open_files = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = Path(os.readlink(fd))
        except OSError:
            continue
        if target.parent == base and target.suffix == ".db":
            open_files.add(target.name)
    assert 1 <= len(open_files) <= OPEN_DATABASES, open_files


RANGE_DAYS = dg.DailyPartitionsDefinition(start_date="2025-03-01", end_date="2025-03-06")


@dg.asset(
    partitions_def=RANGE_DAYS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec("positive", asset="ranged")],
)
def ranged(context: dg.AssetExecutionContext):
    for day in context.partition_keys:
        context.add_asset_metadata({"day": day, "rows": len(day)}, partition_key=day)
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(passed=True)])


@dg.asset(partitions_def=RANGE_DAYS, backfill_policy=dg.BackfillPolicy.single_run(), deps=[ranged])
def downstream() -> None:
    return None


def stored(instance: dg.DagsterInstance) -> dict:
    """What Dagster reads back after a run of `ranged` and `downstream` over every day."""
    run = instance.get_runs()[0]
    out = {"run": run.status}
    planned = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    out["planned"] = sorted(str(r.event_log_entry.dagster_event.asset_key) for r in planned)
    for asset in (ranged, downstream):
        records = instance.fetch_materializations(asset.key, limit=100).records
        out[asset.key.to_user_string()] = sorted(
            (r.partition_key, dict(r.asset_materialization.metadata)) for r in records
        )
        latest = instance.get_latest_materialization_event(asset.key)
        out[f"latest {asset.key.to_user_string()}"] = latest.dagster_event.partition
        record = instance.get_asset_records([asset.key])[0].asset_entry
        by_id = {r.storage_id: r.partition_key for r in records}
        out[f"entry {asset.key.to_user_string()}"] = (
            record.last_run_id == run.run_id,
            record.last_materialization.dagster_event.partition,
            # the id the entry keeps names the row of the event it keeps
            by_id.get(record.last_materialization_storage_id),
        )
    check = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(ranged.key, "positive"), limit=10
    )
    out["check"] = [(c.status, c.run_id == run.run_id) for c in check]
    out["statuses"] = {
        str(key): instance.get_status_by_partition(key, RANGE_DAYS.get_partition_keys(), RANGE_DAYS)
        for key in (ranged.key, downstream.key)
    }
    return out


def test_a_batch_of_events_leaves_what_storing_them_one_by_one_leaves(tmp_path, monkeypatch):
    """One run over every day of two assets with a check, stored event by event and as Dagster's
    batches: the materializations per day, the latest one, the asset entry, the planned events
    and the check's history read back the same; with batches, the storage received them."""
    days = RANGE_DAYS.get_partition_keys()
    tags = {ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]}
    batches = []
    original = LocalEventLogStorage.store_event_batch

    def counting(self, events):
        batches.append(len(events))
        original(self, events)

    monkeypatch.setattr(LocalEventLogStorage, "store_event_batch", counting)
    results = {}
    for size in ("0", "1000"):
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", size)
        home = tmp_path / f"home_{size}"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home), overrides=local_profile()) as instance:
            result = dg.materialize([ranged, downstream], instance=instance, tags=tags)
            assert result.success
            results[size] = stored(instance)
        if size == "0":
            assert batches == []
    assert batches and max(batches) >= len(days), batches
    assert results["0"] == results["1000"]
