"""Validation: type the ingested text, run the spec's Pandera schema, quarantine by rule.

Every input row ends up in exactly one of two tables: `valid` (typed, ready for features) or
`quarantine` (the row as ingested, PII already pseudonymised, with every rule it broke). Rules:

- `binary`, `header`, `encoding`, `line_endings`, `delimiter`, `repeated_header`, `row_format`,
  `required_column`: the file or row could not be read as declared (from ingestion);
  `unique_key`: several rows share a key. These are *structural* and fail the check whatever
  their share.
- `dtype`, `not_null`, `range`, `allowed_values`, `date_range`, `not_in_future`,
  `in_partition`: row-level problems; the check fails when their share exceeds the source's
  `max_quarantine_share`.

Each bad row is counted once per root cause: a row that could not be read is not also counted
for the values it lacks, a missing column does not also break `not_null`, and a value that
does not parse does not also count as empty.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa_arrow
import pyarrow.compute as pc

from lending_pipeline.ml.ingest import INGEST_ERROR, SOURCE_FILE, SOURCE_ROW
from lending_pipeline.spec import DEFAULT_MAX_LENGTH, ColumnSpec, SourceSpec, date_bounds

if TYPE_CHECKING:
    import pandera.pandas as pa

WHOLE_ROW_RULES = (
    "binary",
    "header",
    "encoding",
    "line_endings",
    "delimiter",
    "repeated_header",
    "row_format",
)
STRUCTURAL_RULES = (*WHOLE_ROW_RULES, "required_column", "unique_key")
SHOWN_GROUPS = 8
RULE = "_rule"
COLUMN = "_column"
DETAIL = "_detail"
QUARANTINE_COLUMNS = [RULE, COLUMN, DETAIL]
TEXT = pd.StringDtype("pyarrow")


@dataclass(frozen=True)
class FailureGroup:
    """Rows of one file that broke one rule on one column (or as a whole row)."""

    file: str
    column: str
    rule: str
    rows: int
    first_lines: list[int]
    detail: str

    @property
    def structural(self) -> bool:
        return self.rule in STRUCTURAL_RULES

    def describe(self) -> str:
        where = f"column '{self.column}'" if self.column else "whole row"
        lines = ", ".join(str(n) for n in self.first_lines)
        more = ", ..." if self.rows > len(self.first_lines) else ""
        return (
            f"file '{self.file}', {where}, rule {self.rule}: {self.rows} row(s) at line(s) "
            f"{lines}{more} ({self.detail})"
        )


@dataclass
class ValidationOutcome:
    source: str
    day: str
    input_rows: int
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    rule_counts: dict[str, int]
    structural: list[str] = field(default_factory=list)
    max_share: float = 0.0
    groups: list[FailureGroup] = field(default_factory=list)

    @property
    def quarantined_rows(self) -> int:
        return len(self.quarantine)

    @property
    def quarantine_share(self) -> float:
        return self.quarantined_rows / self.input_rows if self.input_rows else 0.0

    @property
    def reconciled(self) -> bool:
        return len(self.valid) + len(self.quarantine) == self.input_rows

    @property
    def passed(self) -> bool:
        return not self.structural and self.quarantine_share <= self.max_share

    def failure_summary(self) -> str:
        """One paragraph an on-call engineer can act on."""
        if self.passed:
            return (
                f"{self.source} {self.day}: {self.quarantined_rows} of {self.input_rows} rows "
                f"quarantined ({self.quarantine_share:.2%}, limit {self.max_share:.2%})"
            )
        lines = list(self.structural)
        if self.quarantine_share > self.max_share:
            rules = ", ".join(f"{r}: {n}" for r, n in sorted(self.rule_counts.items()))
            lines.append(
                f"source '{self.source}' partition {self.day}: {self.quarantined_rows} of "
                f"{self.input_rows} rows quarantined ({self.quarantine_share:.2%}) exceeds "
                f"max_quarantine_share {self.max_share:.2%} (rows by rule: {rules})"
            )
            row_level = [g for g in self.groups if not g.structural]
            lines += [g.describe() for g in row_level[:SHOWN_GROUPS]]
            if len(row_level) > SHOWN_GROUPS:
                lines.append(f"... and {len(row_level) - SHOWN_GROUPS} more (see the quarantine)")
        return "\n".join(lines)


def _rule_text(column: str, spec: ColumnSpec) -> dict[str, str]:
    """Human descriptions of each rule on a column (used as Pandera error texts)."""
    texts = {"not_null": f"not_null: {column} must not be empty"}
    if spec.min is not None or spec.max is not None:
        low = "-inf" if spec.min is None else f"{spec.min:g}"
        high = "inf" if spec.max is None else f"{spec.max:g}"
        texts["range"] = f"range: {column} must be between {low} and {high}"
    if spec.allowed is not None:
        allowed = ", ".join(str(v) for v in spec.allowed)
        texts["allowed_values"] = f"allowed_values: {column} must be one of {allowed}"
    return texts


def build_schema(
    source: SourceSpec, day: str, today: dt.date, unique: list[str] | None = None
) -> pa.DataFrameSchema:
    """The Pandera schema of a typed source partition, from the spec (`unique`: the columns
    that must be unique together, default the source's key)."""
    import pandera.pandas as pa  # imported where used: jobs that do not validate skip its cost

    columns = {}
    day_ts = pd.Timestamp(day)
    today_ts = pd.Timestamp(today)
    for name, spec in source.columns.items():
        texts = _rule_text(name, spec)
        checks = []
        if "range" in texts:
            checks.append(
                pa.Check.in_range(
                    -np.inf if spec.min is None else spec.min,
                    np.inf if spec.max is None else spec.max,
                    error=texts["range"],
                )
            )
        if "allowed_values" in texts:
            allowed = [_typed_allowed(v, spec) for v in spec.allowed]
            checks.append(pa.Check.isin(allowed, error=texts["allowed_values"]))
        if spec.dtype == "date":
            earliest, latest = date_bounds(spec, today)
            checks.append(
                pa.Check.ge(
                    pd.Timestamp(earliest),
                    error=f"date_range: {name} must not be before {earliest}",
                )
            )
            checks.append(
                pa.Check.le(today_ts, error=f"not_in_future: {name} must not be after {today}")
            )
            if latest < today:
                checks.append(
                    pa.Check.le(
                        pd.Timestamp(latest), error=f"date_range: {name} must not be after {latest}"
                    )
                )
        columns[name] = pa.Column(_pandas_dtype(spec), checks=checks, nullable=spec.nullable)
    return pa.DataFrameSchema(
        columns,
        unique=unique or source.key,
        report_duplicates="all",
        checks=[],
        name=source.name,
        metadata={"partition": str(day_ts.date())},
    )


def _typed_allowed(value, spec: ColumnSpec):
    if spec.dtype == "int":
        return int(value)
    if spec.dtype == "float":
        return float(value)
    return str(value)


def _pandas_dtype(spec: ColumnSpec):
    return {
        "string": TEXT,
        "category": TEXT,
        "int": "Int64",
        "float": "float64",
        "bool": "boolean",
        "date": "datetime64[ns]",
    }[spec.dtype]


def coerce(raw: pd.DataFrame, source: SourceSpec) -> tuple[pd.DataFrame, list[tuple]]:
    """Parse each declared column from text to its dtype.

    Returns the typed frame and a list of (mask, rule, column, detail) for values that could
    not be parsed (they become null in the typed frame and the row is quarantined).
    """
    typed = {}
    failures = []
    for name, spec in source.columns.items():
        text = raw[name]
        present = text.notna()
        values = _parse(text, spec.dtype)
        bad = present & values.isna()
        if bad.any():
            failures.append((bad.to_numpy(), "dtype", name, f"dtype: {name} must be {spec.dtype}"))
        if spec.dtype in ("string", "category") and not spec.pii and spec.allowed is None:
            failures += _text_rules(values, name, spec)
        typed[name] = values
    return pd.DataFrame(typed, index=raw.index), failures


CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
FORMULA = r"^[=+\-@]"  # a spreadsheet would run it (CSV injection)
NUMBER = r"^[+\-]?[0-9.]"


def _text_rules(values: pd.Series, name: str, spec: ColumnSpec) -> list[tuple]:
    """Free text (not PII, not restricted to `allowed`): a length limit, and no control
    characters or spreadsheet formulas."""
    failures = []
    limit = spec.max_length or DEFAULT_MAX_LENGTH
    long = (values.str.len() > limit).fillna(False).to_numpy(dtype=bool)
    if long.any():
        detail = f"max_length: {name} must be at most {limit} characters"
        failures.append((long, "max_length", name, detail))
    control = values.str.contains(CONTROL, regex=True).fillna(False)
    formula = values.str.contains(FORMULA, regex=True) & ~values.str.contains(NUMBER, regex=True)
    unsafe = (control | formula.fillna(False)).to_numpy(dtype=bool)
    if unsafe.any():
        detail = (
            f"text_content: {name} must hold no control characters and not start like a "
            "spreadsheet formula (=, +, -, @)"
        )
        failures.append((unsafe, "text_content", name, detail))
    return failures


def _arrow_text(text: pd.Series) -> pa_arrow.Array:
    return pa_arrow.array(text.astype(TEXT), type=pa_arrow.string())


def _parse(text: pd.Series, dtype: str) -> pd.Series:
    """Text to one dtype, fast in Arrow; unparseable values become null."""
    if dtype in ("string", "category"):
        return text.astype(TEXT)
    if dtype in ("int", "float"):
        try:
            values = pd.Series(
                pc.cast(_arrow_text(text), pa_arrow.float64()).to_numpy(zero_copy_only=False),
                index=text.index,
            )
        except pa_arrow.ArrowInvalid:
            values = pd.to_numeric(text.astype(object), errors="coerce").astype("float64")
        values = values.where(np.isfinite(values))
        if dtype == "int":
            values = values.mask(values != np.floor(values)).astype("Int64")
        return values
    if dtype == "date":
        try:
            parsed = pc.strptime(_arrow_text(text), format="%Y-%m-%d", unit="s")
            storable = pc.and_(  # the span a pandas datetime64[ns] can hold
                pc.greater_equal(parsed, pa_arrow.scalar(dt.datetime(1678, 1, 1), parsed.type)),
                pc.less(parsed, pa_arrow.scalar(dt.datetime(2262, 1, 1), parsed.type)),
            )
            parsed = pc.if_else(storable, parsed, pa_arrow.scalar(None, parsed.type))
            values = pd.Series(parsed.to_pandas(), index=text.index).astype("datetime64[ns]")
        except pa_arrow.ArrowInvalid:
            values = pd.to_datetime(text.astype(object), format="ISO8601", errors="coerce")
        return values.dt.normalize()
    lowered = text.astype(object).str.lower()
    return lowered.map({"true": True, "false": False, "1": True, "0": False}).astype("boolean")


def run_schema(
    typed: pd.DataFrame, schema: pa.DataFrameSchema, key: list[str] | None = None
) -> list[tuple]:
    """Run the Pandera schema lazily; return (mask, rule, column, detail) per failed rule.
    `key`: the unique key as reported (default: the schema's)."""
    import pandera.pandas as pa

    key = list(key or schema.unique or [])
    try:
        schema.validate(typed, lazy=True)
        return []
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    cases = cases[cases["index"].notna()]
    failures = []
    for (column, check), group in cases.groupby(["column", "check"], sort=True):
        if check == "multiple_fields_uniqueness" or str(check).startswith("field_uniqueness"):
            rule, detail = "unique_key", f"unique_key: {', '.join(key)} must be unique"
            column = ", ".join(key)
        elif check == "not_nullable":
            rule, detail = "not_null", f"not_null: {column} must not be empty"
        else:
            detail = str(check)
            rule = detail.split(":", 1)[0] if ":" in detail else "dtype"
        mask = np.zeros(len(typed), dtype=bool)
        positions = typed.index.get_indexer(group["index"].astype("int64").unique())
        mask[positions[positions >= 0]] = True
        failures.append((mask, rule, column, detail))
    return failures


def validate_source(
    raw: pd.DataFrame,
    source: SourceSpec,
    day: str,
    today: dt.date | None = None,
    partition_dated: bool = False,
) -> ValidationOutcome:
    """Split one ingested partition into valid rows and quarantined rows, by rule.

    `partition_dated`: the source's date column must equal the partition day (true for the
    entity source, whose rows are partitioned by their own date).
    """
    today = today or dt.datetime.now(dt.UTC).date()
    raw, typed, failures = _read_rules(raw, source)
    failures += run_schema(typed, build_schema(source, day, today))
    return _outcome(raw, typed, failures, source, day, partition_dated)


PARTITION_DAY = "_partition_day"


def validate_days(
    raws: dict[str, pd.DataFrame],
    source: SourceSpec,
    today: dt.date | None = None,
    partition_dated: bool = False,
) -> dict[str, ValidationOutcome]:
    """`validate_source` of several days at once: the same outcome for each day, with parsing
    and the Pandera schema run once over all of them (their fixed cost per call dominates small
    days). Keys stay unique per day, as in a day's own validation."""
    today = today or dt.datetime.now(dt.UTC).date()
    days = list(raws)
    if len(days) < 2:
        return {
            day: validate_source(raws[day], source, day, today, partition_dated) for day in days
        }
    sizes = [len(raws[day]) for day in days]
    raw, typed, together = _read_rules(pd.concat([raws[day] for day in days]), source)
    typed[PARTITION_DAY] = np.repeat(np.arange(len(days)), sizes)
    schema = build_schema(source, days[0], today, unique=[*source.key, PARTITION_DAY])
    together += run_schema(typed, schema, key=list(source.key))
    typed = typed.drop(columns=PARTITION_DAY)
    outcomes = {}
    start = 0
    for day, size in zip(days, sizes, strict=True):
        end = start + size
        failures = []
        for mask, rule, column, detail in together:
            part = mask[start:end]
            if part.any():
                failures.append((part, rule, column, detail))
        outcomes[day] = _outcome(
            raw.iloc[start:end].reset_index(drop=True),
            typed.iloc[start:end].reset_index(drop=True),
            failures,
            source,
            day,
            partition_dated,
        )
        start = end
    return outcomes


def _read_rules(raw: pd.DataFrame, source: SourceSpec) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """The ingested rows (index reset), typed, and the failures found before the schema: rows
    ingestion could not read, values that do not parse, unsafe text."""
    raw = raw.reset_index(drop=True)
    failures: list[tuple] = []
    if INGEST_ERROR in raw and raw[INGEST_ERROR].notna().any():
        errors = raw[INGEST_ERROR]
        for text in errors.dropna().unique():
            rule = text.split(":", 1)[0]
            column = text.split("'")[1] if rule == "required_column" and "'" in text else ""
            matches = (errors == text).fillna(False).to_numpy(dtype=bool)
            failures.append((matches, rule, column, text))
    typed, dtype_failures = coerce(raw, source)
    return raw, typed, failures + dtype_failures


def _outcome(
    raw: pd.DataFrame,
    typed: pd.DataFrame,
    failures: list[tuple],
    source: SourceSpec,
    day: str,
    partition_dated: bool,
) -> ValidationOutcome:
    """Valid rows, quarantined rows by root cause, counts and structural problems of a day."""
    n = len(raw)
    if partition_dated:
        failures += _partition_rule(typed, source, day)
    failures = _root_causes(failures)

    failed = np.zeros(n, dtype=bool)
    for mask, *_ in failures:
        failed |= mask
    quarantine = _quarantine_rows(raw, failures, failed)
    by_rule: dict[str, np.ndarray] = {}
    for mask, rule, *_ in failures:
        by_rule[rule] = by_rule[rule] | mask if rule in by_rule else mask
    rule_counts = Counter({rule: int(mask.sum()) for rule, mask in by_rule.items()})
    valid = typed[~failed].copy()
    valid[SOURCE_FILE] = raw.loc[~failed, SOURCE_FILE].to_numpy()
    valid[SOURCE_ROW] = raw.loc[~failed, SOURCE_ROW].to_numpy()
    outcome = ValidationOutcome(
        source=source.name,
        day=day,
        input_rows=n,
        valid=valid.reset_index(drop=True),
        quarantine=quarantine,
        rule_counts=dict(rule_counts),
        max_share=source.max_quarantine_share,
        groups=_groups(raw, failures),
    )
    outcome.structural = _structural(raw, outcome.groups, source, day)
    return outcome


def _root_causes(failures: list[tuple]) -> list[tuple]:
    """One entry per (rule, column, detail), each row under its root causes only: a row that
    could not be read is not also blamed for its values; a missing column or a value that does
    not parse is not also an empty value, out of range, and so on."""
    merged: dict[tuple, np.ndarray] = {}
    for mask, rule, column, detail in failures:
        key = (rule, column, detail)
        merged[key] = merged[key] | mask if key in merged else mask.copy()
    whole_row = np.zeros(len(failures[0][0]) if failures else 0, dtype=bool)
    missing: dict[str, np.ndarray] = {}
    unparsed: dict[str, np.ndarray] = {}
    for (rule, column, _), mask in merged.items():
        if rule in WHOLE_ROW_RULES:
            whole_row |= mask
        elif rule == "required_column":
            for name in column.split(", "):
                missing[name] = missing.get(name, False) | mask
        elif rule == "dtype":
            unparsed[column] = unparsed.get(column, False) | mask
    result = []
    for (rule, column, detail), mask in merged.items():
        if rule not in WHOLE_ROW_RULES:
            mask = mask & ~whole_row
            for name in column.split(", ") if rule != "required_column" else []:
                if name in missing:  # a key column missing also leaves its keys empty
                    mask = mask & ~missing[name]
            if rule not in ("required_column", "dtype") and column in unparsed:
                mask = mask & ~unparsed[column]
        if mask.any():
            result.append((mask, rule, column, detail))
    return result


def _groups(raw: pd.DataFrame, failures: list[tuple]) -> list[FailureGroup]:
    """Failures by file, column and rule, structural first, largest first."""
    groups = []
    files = raw[SOURCE_FILE].to_numpy(dtype=object) if len(raw) else np.array([], dtype=object)
    lines = raw[SOURCE_ROW].to_numpy() if len(raw) else np.array([], dtype=np.int64)
    by_key: dict[tuple, list] = {}
    for mask, rule, column, detail in failures:
        for file in dict.fromkeys(files[mask]):
            rows = mask & (files == file)
            key = (file, column, rule)
            if key in by_key:
                by_key[key][0] |= rows
            else:
                by_key[key] = [rows, detail]
    for (file, column, rule), (rows, detail) in by_key.items():
        first = sorted(int(n) for n in lines[rows])[:5]
        groups.append(FailureGroup(file, column, rule, int(rows.sum()), first, detail))
    groups.sort(key=lambda g: (not g.structural, -g.rows, g.file, g.column, g.rule))
    return groups


def _partition_rule(typed: pd.DataFrame, source: SourceSpec, day: str) -> list[tuple]:
    """A partition holds one day: rows of the day's own date column must carry that day."""
    if source.date_column not in typed:
        return []
    dates = typed[source.date_column]
    outside = (dates.notna() & (dates != pd.Timestamp(day))).to_numpy()
    if not outside.any():
        return []
    detail = f"in_partition: {source.date_column} must equal the partition day {day}"
    return [(outside, "in_partition", source.date_column, detail)]


def _quarantine_rows(raw: pd.DataFrame, failures: list[tuple], failed: np.ndarray) -> pd.DataFrame:
    quarantine = raw[failed].copy()
    positions = np.flatnonzero(failed)
    rules = [[] for _ in positions]
    columns = [[] for _ in positions]
    details = [[] for _ in positions]
    lookup = {p: i for i, p in enumerate(positions)}
    for mask, rule, column, detail in failures:
        for p in np.flatnonzero(mask):
            i = lookup[p]
            if detail not in details[i]:
                rules[i].append(rule)
                columns[i].append(column)
                details[i].append(detail)
    quarantine[RULE] = [";".join(dict.fromkeys(r)) for r in rules]
    quarantine[COLUMN] = [";".join(dict.fromkeys(c for c in cols if c)) for cols in columns]
    quarantine[DETAIL] = ["; ".join(d) for d in details]
    return quarantine.reset_index(drop=True)


def _structural(
    raw: pd.DataFrame, groups: list[FailureGroup], source: SourceSpec, day: str
) -> list[str]:
    messages = []
    if len(raw) == 0 and source.required:
        messages.append(
            f"source '{source.name}' partition {day}: no rows (rule: not_empty) in files "
            f"matching '{source.files_for(day)}'"
        )
    messages += [g.describe() for g in groups if g.structural]
    return messages
