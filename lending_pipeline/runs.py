"""Headless runs of the daily job on a real instance: one Dagster run per range of consecutive
days (the daily assets process many days per run), or per day."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
)

from lending_pipeline.definitions import DAILY_JOB, MONITORING_JOB, TRAINING_JOB
from lending_pipeline.defs.common import DAYS_PER_RUN
from lending_pipeline.defs.resources import resolve_data_dir
from lending_pipeline.partitions import partition_start
from lending_pipeline.spec import SPEC_ENV, PipelineSpec

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# Daily runs report through `PartitionRun.problems` (one line per failed check or refusal, full
# tracebacks for real errors), so Dagster's console logger stays silent.
SILENT = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class Problem:
    """One thing that went wrong in a run: a failed check, a refused step, or a real error
    (`traceback` set: an exception the pipeline did not expect)."""

    kind: str  # "check", "refused" or "error"
    name: str  # the check or the step
    partition: str | None
    what: str
    runbook: str = ""
    traceback: str = ""

    def line(self) -> str:
        """One line: kind, name, partition, what and where, runbook anchor."""
        lines = [line for line in self.what.splitlines() if line.strip()]
        first = lines[0] if lines else "(no description)"
        if len(lines) > 1:
            detail = next((line for line in lines[1:] if line.startswith("file '")), "")
            if detail and not first.startswith("file '"):
                first = f"{first} | {detail.strip()}"
            more = len(lines) - 1 - bool(detail)
            if more > 0:
                first += f" (+{more} more)"
        anchor = f" [runbook {self.runbook}]" if self.runbook else ""
        label = {"check": "FAILED CHECK", "refused": "REFUSED STEP", "error": "ERROR IN STEP"}
        where = f" partition {self.partition}" if self.partition else ""
        return f"{label[self.kind]} {self.name}{where}: {first}{anchor}"


def _anchor(metadata) -> str:
    value = metadata.get("runbook") if metadata else None
    url = getattr(value, "value", value) if value is not None else None
    if not url:
        return ""
    return "docs/runbook.md#" + str(url).rsplit("#", 1)[-1]


@dataclass
class PartitionRun:
    """What a run did: success, failed checks and steps, and their messages."""

    partition: str | None
    success: bool
    run_id: str
    failed_checks: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)
    steps_stopped_by_checks: list[str] = field(default_factory=list)
    check_messages: list[str] = field(default_factory=list)
    step_errors: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def messages(self) -> list[str]:
        return self.check_messages + self.step_errors

    @property
    def refused_by_gates(self) -> bool:
        """Only blocking checks failed the run: a decision (a refused promotion), not a fault."""
        return bool(self.failed_checks) and self.failed_steps == self.steps_stopped_by_checks


def partition_window(spec: PipelineSpec, data_dir: Path | None = None) -> tuple[dt.date, dt.date]:
    """The first and last day with a partition: the spec's start date (or the first day landed
    in the data dir), and yesterday (UTC; a day's partition opens once the day is complete)."""

    start = partition_start(spec, data_dir or resolve_data_dir())
    return start, dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def outside_window(spec: PipelineSpec, days: list[str], data_dir: Path | None = None) -> list[str]:
    """Why each of `days` that has no partition has none, one plain sentence per day."""
    start, last = partition_window(spec, data_dir)
    origin = (
        "partitions.start_date in the spec"
        if spec.partitions.start_date
        else "the first landed day; partitions.start_date in the spec pins it"
    )
    reasons = []
    for text in days:
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            reasons.append(f"{text}: not a day (YYYY-MM-DD)")
            continue
        if day < start:
            reasons.append(f"{text}: before the first partition {start} ({origin})")
        elif day > last:
            reasons.append(
                f"{text}: after the last complete day {last} (UTC); its partition opens once "
                "the day is over"
            )
    return reasons


def landed_days(spec: PipelineSpec, data_dir: Path) -> list[str]:
    """Every day for which the entity source has landing files, in range or not, oldest first."""
    days = set()
    pattern = spec.primary_source.files.replace("{date}", "*").replace("**", "*")
    for path in data_dir.glob(pattern):
        found = DAY.search(str(path.relative_to(data_dir)))
        if found:
            days.add(found.group(0))
    return sorted(days)


def landed_bytes_per_day(spec: PipelineSpec, data_dir: Path, days: list[str]) -> float:
    """Mean bytes of landing files per day over `days`, all sources together."""
    from lending_pipeline.ml.ingest import find_files

    if not days:
        return 0.0
    total = sum(
        path.stat().st_size
        for day in days
        for source in spec.sources
        for path in find_files(source, data_dir, day)
    )
    return total / len(days)


def landed_partitions(spec: PipelineSpec, data_dir: Path) -> list[str]:
    """Days for which the entity source has landing files and a partition, oldest first."""
    days = landed_days(spec, data_dir)
    outside = {reason.split(":", 1)[0] for reason in outside_window(spec, days, data_dir)}
    return [day for day in days if day not in outside]


def run_partition(
    defs: dg.Definitions, instance: dg.DagsterInstance, partition: str, job_name: str = DAILY_JOB
) -> PartitionRun:
    """Materialize one partition of a job with its checks; never raises on failure."""
    job = defs.resolve_job_def(job_name)
    result = job.execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=False, run_config=SILENT
    )
    return summarize(result, partition)


def run_partition_lean(
    instance: dg.DagsterInstance, partition: str, tags: dict[str, str] | None = None
) -> PartitionRun:
    """Like `run_partition`, for the spec in force, without keeping step outputs in memory.

    `execute_in_process` holds every step's output until the run ends; `execute_job` leaves
    them to the IO manager, which halves peak memory on large partitions.
    """
    from lending_pipeline.definitions import daily_job

    with dg.execute_job(
        dg.reconstructable(daily_job),
        instance=instance,
        run_config=SILENT,
        tags={**(tags or {}), "dagster/partition": partition},
        raise_on_error=False,
    ) as result:
        return summarize(result, partition)


def range_tags(days: list[str]) -> dict[str, str]:
    """The tags of a run over the range of consecutive `days`."""
    return {ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]}


def run_range_lean(
    instance: dg.DagsterInstance, days: list[str], tags: dict[str, str] | None = None
) -> PartitionRun:
    """One run of the daily job over consecutive `days` (a partition range), like
    `run_partition_lean`; its problems name their day where the day is known. A single day
    outside a backfill runs as a plain partition; inside one it is a range of one day (a
    backfill of ranges reads every run's range)."""
    from lending_pipeline.definitions import daily_job

    if len(days) == 1 and BACKFILL_ID_TAG not in (tags or {}):
        return run_partition_lean(instance, days[0], tags)

    with dg.execute_job(
        dg.reconstructable(daily_job),
        instance=instance,
        run_config=SILENT,
        tags={**(tags or {}), **range_tags(days)},
        raise_on_error=False,
    ) as result:
        return summarize(result, days[0] if len(days) == 1 else None)


SPLIT_TAG = "lending/split_from_backfill"


def run_days(
    instance: dg.DagsterInstance, days: list[str], tags: dict[str, str] | None = None
) -> list[PartitionRun]:
    """The daily job over consecutive `days`, one result per day.

    One run covers them all. When that run fails (a blocking check or a step failed on some
    day), the days it names run again on their own, one run each, and the days between them as
    ranges (a failure naming no day splits the range in halves): a damaged day ends as in a
    run of that day alone, and every other day is materialized. The split run stays in the run
    list, tagged `lending/split_from_backfill`, and leaves the backfill, whose status per day
    is then the outcome of the run that decided it."""
    run = run_range_lean(instance, days, tags)
    if len(days) == 1:
        return [run]
    if run.success:
        return [_day_of(run, day) for day in days]
    backfill = (tags or {}).get(BACKFILL_ID_TAG)
    if backfill:
        instance.add_run_tags(run.run_id, {BACKFILL_ID_TAG: "", SPLIT_TAG: backfill})
    named = {p.partition for p in run.problems} & set(days)
    if named:
        parts, current = [], []
        for day in days:
            if day in named:
                parts += [current, [day]] if current else [[day]]
                current = []
            else:
                current.append(day)
        parts += [current] if current else []
    else:
        half = len(days) // 2
        parts = [days[:half], days[half:]]
    return [result for part in parts for result in run_days(instance, part, tags)]


def _day_of(run: PartitionRun, day: str) -> PartitionRun:
    """What a successful run over several days did on one of them (failed non-blocking checks
    included)."""
    problems = [p for p in run.problems if p.partition == day]
    checks = [p for p in problems if p.kind == "check"]
    return PartitionRun(
        partition=day,
        success=True,
        run_id=run.run_id,
        failed_checks=[p.name for p in checks],
        check_messages=[p.what for p in checks if p.what],
        problems=problems,
    )


def consecutive_chunks(days: list[str], size: int) -> list[list[str]]:
    """`days` (sorted) cut into runs of at most `size` consecutive days."""
    chunks: list[list[str]] = []
    for text in days:
        day = dt.date.fromisoformat(text)
        last = chunks[-1][-1] if chunks else None
        if (
            last is None
            or len(chunks[-1]) >= size
            or dt.date.fromisoformat(last) + dt.timedelta(days=1) != day
        ):
            chunks.append([text])
        else:
            chunks[-1].append(text)
    return chunks


# Landing bytes one run reads at most (all sources): a run holds its days in memory at once.
RUN_LANDING_BYTES = 64_000_000


def days_per_run(days: int, workers: int, most: int, day_bytes: float = 0.0) -> int:
    """Days per run so that every worker gets an even share of runs of at most `most` days,
    and of at most `RUN_LANDING_BYTES` of landing files for days of `day_bytes` each."""
    workers = max(workers, 1)
    if day_bytes > 0:
        most = max(1, min(most, int(RUN_LANDING_BYTES // day_bytes)))
    runs = workers * -(-days // (workers * most))
    return max(1, -(-days // max(runs, 1)))


def default_days_per_run(
    spec: PipelineSpec, data_dir: Path, partitions: list[str], workers: int
) -> int:
    """Days per run for `partitions` landed in `data_dir`: an even share per worker, at most
    `DAYS_PER_RUN` and `RUN_LANDING_BYTES` of landing files a run."""
    per_day = landed_bytes_per_day(spec, data_dir, partitions)
    return days_per_run(len(partitions), workers, DAYS_PER_RUN, per_day)


def run_training_lean(
    instance: dg.DagsterInstance, run_config: dict | None = None, package: bool = True
) -> PartitionRun:
    """One run of the training job of the spec in force, executed by reference: on the job's
    configured executor (Celery in the production profile), never holding outputs in memory.
    Unless `package`, the new champion's Bento is not built."""
    from lending_pipeline.definitions import training_job

    selection = None
    if not package:
        keys = training_job().asset_layer.executable_asset_keys
        selection = [key for key in keys if key.path[-1] != "scoring_bento"]
    with dg.execute_job(
        dg.reconstructable(training_job),
        instance=instance,
        run_config={**QUIET, **(run_config or {})},
        raise_on_error=False,
        asset_selection=selection,
    ) as result:
        return summarize(result)


def summarize(result, partition: str | None = None) -> PartitionRun:
    run = PartitionRun(partition=partition, success=result.success, run_id=result.run_id)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            run.failed_checks.append(evaluation.check_name)
            if evaluation.description:
                run.check_messages.append(evaluation.description)
            run.problems.append(
                Problem(
                    "check",
                    evaluation.check_name,
                    evaluation.partition or partition,
                    evaluation.description or "",
                    _anchor(evaluation.metadata),
                )
            )
    for event in result.all_events:
        if event.is_step_failure:
            run.failed_steps.append(event.step_key)
            data = event.step_failure_data
            error = data.error
            if error is not None:
                message = error.message.strip().splitlines()[0]
                if error.cause is not None:  # the user code's exception behind Dagster's
                    message += " " + error.cause.message.strip().splitlines()[0]
                run.step_errors.append(message)
                if error.cls_name == "DagsterAssetCheckFailedError":
                    run.steps_stopped_by_checks.append(event.step_key)
                    continue
            failure = data.user_failure_data
            if failure is not None:
                what = failure.description or (error.message if error else "")
                day = partition or _named_day(failure.metadata)
                run.problems.append(
                    Problem("refused", event.step_key, day, what, _anchor(failure.metadata))
                )
            elif error is not None:
                root = error
                while root.cause is not None:  # the user code's exception, under Dagster's
                    root = root.cause
                what = root.message.strip()
                if not what.startswith(root.cls_name):
                    what = f"{root.cls_name}: {what}"
                run.problems.append(
                    Problem("error", event.step_key, partition, what, traceback=_full(error))
                )
    return run


def _named_day(metadata) -> str | None:
    """The day a step failure over several days names in its metadata (the first, if several:
    a run of the others then names the next)."""
    value = metadata.get("partition") if metadata else None
    text = str(getattr(value, "value", value) or "")
    found = DAY.search(text)
    return found.group(0) if found else None


def _full(error) -> str:
    """The whole error: the user code's own exception and traceback first (Dagster wraps it),
    then Dagster's frames."""
    return error.to_string()


def run_training(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: dict | None = None,
    package: bool = True,
) -> dg.ExecuteInProcessResult:
    """One run of the training job: training set, candidate, evaluation, gates, promotion and,
    unless `package` is false, the new champion's Bento."""
    config = {**QUIET, **(run_config or {})}
    job = defs.resolve_job_def(TRAINING_JOB)
    selection = None
    if not package:
        keys = job.asset_layer.executable_asset_keys
        selection = [key for key in keys if key.path[-1] != "scoring_bento"]
    return job.execute_in_process(
        instance=instance, raise_on_error=False, run_config=config, asset_selection=selection
    )


def run_monitoring(
    defs: dg.Definitions, instance: dg.DagsterInstance, partition: str, evidently: bool = True
) -> dg.ExecuteInProcessResult:
    """One run of the monitoring job: the partition's drift report and its checks."""
    job = defs.resolve_job_def(MONITORING_JOB)
    config = {**QUIET, "ops": {"drift_report": {"config": {"evidently_report": evidently}}}}
    return job.execute_in_process(
        partition_key=partition, instance=instance, run_config=config, raise_on_error=False
    )


def tick_sensor(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None = None
):
    """Evaluate one tick of a sensor against the instance (what the daemon does each interval)."""
    sensor = defs.resolve_sensor_def(name)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return sensor.evaluate_tick(context)


def launch_requested(
    defs: dg.Definitions, instance: dg.DagsterInstance, sensor: str, request: dg.RunRequest
) -> dg.ExecuteInProcessResult | None:
    """Run a sensor's run request in process, unless a run with its run key exists (the daemon
    dedupes run keys the same way). Tagged like a daemon-launched run."""
    key = request.run_key
    if key and instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": key}), limit=1):
        return None
    job = defs.resolve_job_def(request.job_name or TRAINING_JOB)
    tags = {**request.tags, "dagster/sensor_name": sensor}
    if key:
        tags["dagster/run_key"] = key
    return job.execute_in_process(
        instance=instance, tags=tags, run_config=QUIET, raise_on_error=False
    )


def warehouse_rows(data_dir: Path, partitions: list[str]) -> dict[str, int]:
    """Rows stored per asset over the given partitions (read from Parquet footers)."""
    from lending_pipeline.defs.resources import warehouse_root

    totals: dict[str, int] = {}
    warehouse = warehouse_root(data_dir)
    if not warehouse.exists():
        return totals
    for folder in sorted((p for p in warehouse.iterdir() if p.is_dir()), key=lambda p: p.name):
        paths = [folder / f"{day}.parquet" for day in partitions]
        totals[folder.name] = sum(
            pq.ParquetFile(path.path, filesystem=path.fs).metadata.num_rows
            for path in paths
            if path.exists()
        )
    return totals


_WORKER: dict = {}


def _init_worker(spec_path: str | None, tags: dict[str, str] | None = None) -> None:
    if spec_path:
        os.environ[SPEC_ENV] = str(Path(spec_path).resolve())
    _WORKER["instance"] = dg.DagsterInstance.get()
    _WORKER["tags"] = tags or {}


def _run_in_worker(days: list[str]) -> list[PartitionRun]:
    return run_days(_WORKER["instance"], days, _WORKER.get("tags"))


def run_partitions(
    spec_path: str | None,
    partitions: list[str],
    workers: int = 1,
    tags: dict[str, str] | None = None,
    days_per_run: int = 1,
) -> Iterator[PartitionRun]:
    """Run partitions in `workers` processes (each with its own code location and instance),
    up to `days_per_run` consecutive days per run, every run with `tags` (e.g. the backfill it
    belongs to); one result per partition, in order."""
    chunks = consecutive_chunks(sorted(partitions), days_per_run)
    if workers <= 1 or len(chunks) < 2:
        _init_worker(spec_path, tags)
        for chunk in chunks:
            yield from _run_in_worker(chunk)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(spec_path, tags),
    ) as pool:
        for runs in pool.map(_run_in_worker, chunks):
            yield from runs
