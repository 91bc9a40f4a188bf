"""Which days are partitions: from the spec's `partitions.start_date`, or, when the spec leaves
it out, from the first day landed for the entity source, to the last complete day (UTC)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from lending_pipeline.spec import PipelineSpec

DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def last_complete_day() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def landed_days(spec: PipelineSpec, data_dir: Path) -> list[dt.date]:
    """Days for which the entity source has a landing file, oldest first (any date)."""
    pattern = spec.primary_source.files.replace("{date}", "*").replace("**", "*")
    days = set()
    for path in data_dir.glob(pattern):
        found = DAY.search(str(path.relative_to(data_dir)))
        if found:
            days.add(dt.date.fromisoformat(found.group(0)))
    return sorted(days)


def partition_start(spec: PipelineSpec, data_dir: Path) -> dt.date:
    """The first daily partition: the spec's start date, else the first landed complete day,
    else the last complete day (nothing landed yet)."""
    if spec.partitions.start_date is not None:
        return spec.partitions.start_date
    end = last_complete_day()
    days = [day for day in landed_days(spec, data_dir) if day <= end]
    return days[0] if days else end
