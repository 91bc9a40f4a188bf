"""Is there enough data to train meaningfully? A small dataset is refused, not trained into
metrics that mean nothing.

Each problem names what is too small (days, rows or defaults in a split, groups for the
fairness gates) and the spec fields that change it.
"""

from __future__ import annotations

import pandas as pd

from lending_pipeline.spec import PipelineSpec

MIN_ROWS = {"train": 200, "validation": 100, "test": 100}
MIN_DEFAULTS = {"train": 20, "validation": 10, "test": 10}


def days_problem(spec: PipelineSpec, frame: pd.DataFrame) -> str | None:
    """Too few days of matured applications for the out-of-time split."""
    split = spec.model.split
    days = frame[spec.primary_source.date_column].dropna().nunique()
    needed = split.validation_days + split.test_days + 1
    if days >= needed:
        return None
    return (
        f"days: {days} day(s) of matured applications; the out-of-time split needs at least "
        f"{needed} (model.split.validation_days {split.validation_days} + test_days "
        f"{split.test_days} + 1 for training). Lower model.split.validation_days/test_days, "
        f"or wait until more days mature (target.maturity_days {spec.target.maturity_days})"
    )


def split_problems(spec: PipelineSpec, parts: dict[str, pd.DataFrame]) -> list[str]:
    """Rows and defaults per split, and protected groups large enough to be judged."""
    problems = []
    split = spec.model.split
    fields = {
        "train": "fewer days to model.split.validation_days/test_days, or more data",
        "validation": f"raise model.split.validation_days (now {split.validation_days})",
        "test": f"raise model.split.test_days (now {split.test_days})",
    }
    for name, part in parts.items():
        rows, defaults = len(part), int(part["target"].sum())
        goods = rows - defaults
        if rows < MIN_ROWS[name]:
            problems.append(
                f"split {name}: {rows} rows, at least {MIN_ROWS[name]} needed: {fields[name]}"
            )
        elif min(defaults, goods) < MIN_DEFAULTS[name]:
            kind = "defaults" if defaults < goods else "non-defaults"
            problems.append(
                f"split {name}: {min(defaults, goods)} {kind} ({spec.target.column}), at least "
                f"{MIN_DEFAULTS[name]} needed: {fields[name]}"
            )
    test = parts.get("test")
    minimum = spec.gates.min_group_size
    for attribute in spec.protected_attributes:
        if test is None or attribute not in test:
            continue
        sizes = test[attribute].value_counts()
        if (sizes >= minimum).sum() < 2:
            largest = ", ".join(f"{g}: {n}" for g, n in sizes.head(3).items()) or "none"
            problems.append(
                f"fairness: protected attribute {attribute} has fewer than two groups of at "
                f"least gates.min_group_size ({minimum}) applications in the test split "
                f"(largest: {largest}): lower gates.min_group_size or raise "
                "model.split.test_days"
            )
    return problems
