"""Is there enough evidence for the gates to mean anything? Rows and defaults per split.

A gate measured on a few hundred rows, or a few dozen defaults, passes or fails by luck: the
AUC's standard error with 40 defaults is about 0.04, four times a typical champion tolerance.
`split_shortfalls` names each split below `gates.min_split_rows` / `gates.min_split_defaults`
and the spec fields to change; `spec_warnings` does the same from the spec alone (and from the
landed label files, when there are some). Warnings, not errors: the gates still run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from lending_pipeline.spec import PipelineSpec

JUDGED_SPLITS = ("validation", "test")  # cutoff and calibration; the gates
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
MIN_SPLIT_DAYS = 7  # a week: every weekday is in the split
MIN_RESAMPLES_FOR_BOUNDS = 100


def split_days_field(split: str) -> str:
    return f"model.split.{split}_days"


def split_shortfalls(spec: PipelineSpec, counts: dict[str, tuple[int, int]]) -> list[str]:
    """One message per judged split (validation, test) with fewer rows or defaults than the spec's
    minimum; `counts` maps split to (rows, defaults)."""
    gates, messages = spec.gates, []
    for split in JUDGED_SPLITS:
        if split not in counts:
            continue
        rows, defaults = counts[split]
        days_field = split_days_field(split)
        days = getattr(spec.model.split, f"{split}_days")
        for what, actual, field, minimum in (
            ("rows", rows, "gates.min_split_rows", gates.min_split_rows),
            ("defaults", defaults, "gates.min_split_defaults", gates.min_split_defaults),
        ):
            if actual < minimum:
                messages.append(
                    f"{split} split: {actual} {what}, fewer than {field} ({minimum}): its "
                    f"figures are too noisy for the gates to mean much; lengthen {days_field} "
                    f"(now {days}) or land more days, or lower {field} knowingly"
                )
    return messages


def spec_warnings(spec: PipelineSpec, data_dir: Path | None = None) -> list[str]:
    """What the spec alone shows (splits shorter than a week, bounds on too few resamples) and,
    when the target source has landed files under `data_dir`, the splits' expected counts."""
    gates, split = spec.gates, spec.model.split
    messages = []
    for name in JUDGED_SPLITS:
        days = getattr(split, f"{name}_days")
        if days < MIN_SPLIT_DAYS:
            messages.append(
                f"{split_days_field(name)} is {days}: a split shorter than {MIN_SPLIT_DAYS} days "
                "misses weekday effects; raise it"
            )
    bounded = [g for g, how in gates.judge_on.items() if how == "conservative_bound"]
    if bounded and gates.bootstrap_resamples < MIN_RESAMPLES_FOR_BOUNDS:
        messages.append(
            f"gates.judge_on uses conservative bounds ({', '.join(bounded)}) but "
            f"gates.bootstrap_resamples is {gates.bootstrap_resamples}: the bound itself is "
            f"noisy below {MIN_RESAMPLES_FOR_BOUNDS} resamples; raise it"
        )
    if data_dir is not None:
        counts = landed_split_counts(spec, data_dir)
        if counts:
            messages += [
                f"{m} (expected from the landed {spec.target.source} files)"
                for m in split_shortfalls(spec, counts)
            ]
    return messages


def landed_split_counts(spec: PipelineSpec, data_dir: Path) -> dict[str, tuple[int, int]]:
    """Rows and defaults the latest landed days of the target source would give each judged split
    (by the day in each file's name); empty when nothing has landed."""
    source = spec.source_by_name[spec.target.source]
    pattern = source.files.replace("{date}", "????-??-??")
    per_day: dict[str, list[int]] = {}
    for path in sorted(Path(data_dir).glob(pattern)):
        match = DAY.search(path.name)
        if not match:
            continue
        column = spec.target.column
        if source.format == "parquet":
            labels = pd.read_parquet(path, columns=[column])[column]
        else:
            labels = pd.read_csv(path, usecols=[column])[column]
        counts = per_day.setdefault(match.group(), [0, 0])
        counts[0] += len(labels)
        counts[1] += int(pd.to_numeric(labels, errors="coerce").fillna(0).astype(bool).sum())
    days = sorted(per_day)
    if not days:
        return {}
    test, validation = spec.model.split.test_days, spec.model.split.validation_days
    windows = {"test": days[-test:], "validation": days[-(test + validation) : -test]}
    return {
        name: (sum(per_day[d][0] for d in chosen), sum(per_day[d][1] for d in chosen))
        for name, chosen in windows.items()
    }
