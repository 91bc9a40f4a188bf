"""The embedded profile's event log (`lending_pipeline.event_log`): Dagster's SQLite event log
with open connections. What Dagster reads back is what was written, across processes; a watched
run (the UI's live log) hears of events committed to its write-ahead log; open files stay
bounded; commits do not wait for an fsync."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
from dagster._core.events.log import EventLogEntry

from lending_pipeline.event_log import OPEN_DATABASES, LocalEventLogStorage


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
