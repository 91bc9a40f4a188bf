"""The pipeline spec: one YAML file declares sources, schema, features, target and gates.

`load_spec()` reads `LENDING_PIPELINE_SPEC` (default: the shipped consumer-loan spec) and
validates it with pydantic. A bad spec raises `SpecError` naming the file, the field path and
what is wrong. The model, its promotion gates and the drift-monitoring thresholds are declared
here too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import zoneinfo
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lending_pipeline.ml.expressions import ExpressionError, referenced_columns

SPEC_ENV = "LENDING_PIPELINE_SPEC"
DEFAULT_SPEC = "consumer_loan.yaml"
NAME = r"^[a-z][a-z0-9_]*$"

DType = Literal["string", "int", "float", "bool", "date", "category"]
EXPECTATIONS = {
    # spec name: keyword arguments it accepts (besides `column`)
    "expect_column_median_to_be_between": {"min_value", "max_value"},
    "expect_column_mean_to_be_between": {"min_value", "max_value"},
    "expect_column_values_to_be_between": {"min_value", "max_value", "mostly"},
    "expect_column_values_to_not_be_null": {"mostly"},
    "expect_table_row_count_to_be_between": {"min_value", "max_value"},
}


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file, field path and problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Model):
    """One column of a source file."""

    dtype: DType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float] | None = None
    pii: bool = False
    earliest: dt.date | None = None
    latest: dt.date | None = None
    max_length: int | None = Field(default=None, ge=1)
    description: str = ""

    @model_validator(mode="after")
    def _bounds(self) -> ColumnSpec:
        if (self.earliest or self.latest) and self.dtype != "date":
            raise ValueError(f"earliest/latest apply to date columns, not {self.dtype}")
        if self.max_length is not None and self.dtype not in ("string", "category"):
            raise ValueError(f"max_length applies to string and category columns, not {self.dtype}")
        if self.earliest and self.latest and self.earliest > self.latest:
            raise ValueError(f"earliest ({self.earliest}) is after latest ({self.latest})")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if (self.min is not None or self.max is not None) and self.dtype not in (
            "int",
            "float",
        ):
            raise ValueError(f"min/max apply to int and float columns, not {self.dtype}")
        if self.allowed is not None and not self.allowed:
            raise ValueError("allowed must list at least one value")
        if self.pii and self.dtype != "string":
            raise ValueError("pii columns are pseudonymised to text: declare dtype string")
        return self


DEFAULT_EARLIEST = dt.date(1900, 1, 1)
DEFAULT_MAX_LENGTH = 256  # characters of a text value (the scoring service's limit too)


def date_bounds(column: ColumnSpec, today: dt.date) -> tuple[dt.date, dt.date]:
    """The dates a date column accepts: from its `earliest` (default 1900-01-01) to its `latest`
    or `today`, whichever comes first (no date is ever after today)."""
    latest = min(column.latest, today) if column.latest else today
    return column.earliest or DEFAULT_EARLIEST, latest


class ExpectationSpec(_Model):
    """A Great Expectations expectation on a validated source."""

    expectation: str
    column: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    mostly: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _known(self) -> ExpectationSpec:
        if self.expectation not in EXPECTATIONS:
            raise ValueError(
                f"unknown expectation '{self.expectation}' "
                f"(supported: {', '.join(sorted(EXPECTATIONS))})"
            )
        given = {k for k in ("min_value", "max_value", "mostly") if getattr(self, k) is not None}
        extra = given - EXPECTATIONS[self.expectation]
        if extra:
            raise ValueError(f"{self.expectation} does not take {', '.join(sorted(extra))}")
        needs_column = self.expectation != "expect_table_row_count_to_be_between"
        if needs_column and not self.column:
            raise ValueError(f"{self.expectation} needs a column")
        if not needs_column and self.column:
            raise ValueError(f"{self.expectation} applies to the table and takes no column")
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        names = ("column", "min_value", "max_value", "mostly")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


class SourceSpec(_Model):
    """A raw data source: where its files land and what their columns must hold."""

    name: str = Field(pattern=NAME)
    description: str = ""
    files: str
    format: Literal["csv", "parquet"] = "csv"
    key: list[str] = Field(min_length=1)
    date_column: str | None = None
    date_from: Literal["column", "partition"] = "column"
    static: bool = False
    rename: dict[str, str] = {}
    prefix: str = ""
    required: bool = True
    max_quarantine_share: float = Field(default=0.01, ge=0, le=1)
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    expectations: list[ExpectationSpec] = []

    @field_validator("files")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if value.startswith("/") or ".." in Path(value).parts:
            raise ValueError("files must be a relative path inside the data dir")
        return value

    @model_validator(mode="after")
    def _columns(self) -> SourceSpec:
        for name in self.columns:
            if not re.match(NAME, name):
                raise ValueError(f"columns.{name}: column names must match {NAME}")
        for name in self.key:
            if name not in self.columns:
                raise ValueError(f"key: column '{name}' is not declared in columns")
        if self.static:
            if self.date_column or self.date_from != "column":
                raise ValueError("a static source has no date: leave out date_column/date_from")
            if "{date}" in self.files:
                raise ValueError("a static source's files have no {date}: one file for all days")
            return self
        if "{date}" not in self.files:
            raise ValueError("files must contain the placeholder {date} (the partition day)")
        if self.date_column is None:
            raise ValueError("date_column is required (or declare the source static: true)")
        if self.date_column not in self.columns:
            raise ValueError(f"date_column: column '{self.date_column}' is not declared")
        if self.columns[self.date_column].dtype != "date":
            raise ValueError(f"date_column: column '{self.date_column}' must have dtype date")
        for i, exp in enumerate(self.expectations):
            if exp.column and exp.column not in self.columns:
                raise ValueError(f"expectations[{i}].column: unknown column '{exp.column}'")
        return self

    def file_column(self, name: str) -> str:
        """The spec's name of a column as named in the file (`rename`, then `prefix`)."""
        if name in self.rename:
            return self.rename[name]
        return name if name in self.key or not self.prefix else self.prefix + name

    @property
    def file_dated(self) -> bool:
        """Whether the files carry the date column (not filled from the partition day)."""
        return not self.static and self.date_from == "column"

    @property
    def pii_columns(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.pii]

    def files_for(self, day: str) -> str:
        """The glob of this source's files for one partition day."""
        return self.files.replace("{date}", day)  # a static source: the same files every day


class EntitySpec(_Model):
    """What one scored row is: the primary source and the key that joins the others to it."""

    source: str
    key: str


class TargetSpec(_Model):
    """The label: which source holds it and when it is mature."""

    source: str
    column: str
    maturity_days: int = Field(gt=0)


class DerivedFeature(_Model):
    name: str = Field(pattern=NAME)
    expression: str
    description: str = ""

    @field_validator("expression")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            referenced_columns(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return value


class FreshnessSpec(_Model):
    column: str
    max_days: float = Field(gt=0)
    max_stale_share: float = Field(default=0.05, ge=0, le=1)


class FeatureSpec(_Model):
    derived: list[DerivedFeature] = []
    model_inputs: list[str] = Field(min_length=1)
    freshness: FreshnessSpec | None = None


class SplitSpec(_Model):
    """Out-of-time split by application date: the latest days are held out."""

    validation_days: int = Field(default=10, gt=0)
    test_days: int = Field(default=10, gt=0)


class CutoffSpec(_Model):
    """How the decision cutoff is chosen on the validation split (exactly one)."""

    max_bad_rate: float | None = Field(default=None, gt=0, lt=1)
    target_approval_rate: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one(self) -> CutoffSpec:
        if (self.max_bad_rate is None) == (self.target_approval_rate is None):
            raise ValueError("give exactly one of max_bad_rate and target_approval_rate")
        return self


class ModelSpec(_Model):
    """The candidate model: type, hyperparameters, monotonic constraints, calibration."""

    type: Literal["hist_gradient_boosting", "logistic_scorecard"] = "hist_gradient_boosting"
    seed: int = 7
    params: dict[str, float | int | str] = {}
    monotonic: dict[str, Literal[-1, 0, 1]] = {}
    calibration: Literal["isotonic", "sigmoid", "none"] = "isotonic"
    scorecard_c: float = Field(default=1.0, gt=0)
    split: SplitSpec = SplitSpec()
    cutoff: CutoffSpec = CutoffSpec(target_approval_rate=0.7)
    loss_given_default: float = Field(default=0.6, gt=0, le=1)
    exposure_column: str | None = None

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict) -> dict:
        allowed = {
            "learning_rate",
            "max_iter",
            "max_leaf_nodes",
            "max_depth",
            "min_samples_leaf",
            "l2_regularization",
            "max_features",
        }
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
        return value


class GateSpec(_Model):
    """Promotion gates: a candidate becomes champion only when every gate passes."""

    min_roc_auc: float = Field(default=0.70, ge=0, le=1)
    min_ks: float = Field(default=0.30, ge=0, le=1)
    max_ece: float = Field(default=0.03, ge=0, le=1)
    min_adverse_impact_ratio: float = Field(default=0.8, ge=0, le=1)
    max_auc_drop_vs_champion: float = Field(default=0.01, ge=0, le=1)
    min_auc_margin_over_baseline: float = Field(default=0.0, ge=-1, le=1)
    min_group_size: int = Field(default=30, ge=1)


CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute hour day month weekday
CRON_PART = re.compile(r"^(\*|(\d+)(-(\d+))?)(/(\d+))?$")


def _cron_field_ok(field: str, low: int, high: int) -> bool:
    """One cron field: comma-separated `*`, numbers or ranges, each with an optional /step."""
    for part in field.split(","):
        match = CRON_PART.match(part)
        if not match:
            return False
        numbers = [int(g) for g in (match.group(2), match.group(4)) if g is not None]
        if any(not low <= n <= high for n in numbers) or match.group(6) == "0":
            return False
    return True


class RetrainScheduleSpec(_Model):
    """When the scheduled retraining runs: a five-field cron string in a named timezone."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        fields = value.split()
        valid = len(fields) == 5 and all(
            _cron_field_ok(f, *bounds) for f, bounds in zip(fields, CRON_RANGES, strict=True)
        )
        if not valid:
            raise ValueError(
                f"'{value}' is not a five-field cron string (minute hour day month weekday, "
                "numbers, ranges, lists, steps or *)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone '{value}' (an IANA name such as UTC)") from None
        return value


class DriftSpec(_Model):
    """Drift monitoring: PSI tiers, missing-field spikes, minimum volume, retraining triggers."""

    psi_warn: float = Field(default=0.1, gt=0)
    psi_retrain: float = Field(default=0.25, gt=0)
    bins: int = Field(default=10, ge=2, le=100)
    missing_spike: float = Field(default=0.05, gt=0, le=1)
    min_rows: int = Field(default=500, ge=1)
    cooldown_hours: float = Field(default=24, ge=0)
    retrain_schedule: RetrainScheduleSpec = RetrainScheduleSpec()
    report_sample_rows: int = Field(default=20_000, ge=1_000)
    performance_window_days: int = Field(default=30, ge=1)
    max_auc_drop: float = Field(default=0.05, gt=0, le=1)
    max_bad_rate_rise: float = Field(default=0.03, gt=0, le=1)

    @model_validator(mode="after")
    def _tiers(self) -> DriftSpec:
        if self.psi_warn >= self.psi_retrain:
            raise ValueError(
                f"psi_warn ({self.psi_warn:g}) must be below psi_retrain ({self.psi_retrain:g})"
            )
        if self.min_rows < 10 * self.bins:
            raise ValueError(
                f"min_rows ({self.min_rows}) must be at least 10 x bins ({10 * self.bins}): "
                "fewer rows leave bins nearly empty and PSI noisy"
            )
        return self


class ReasonCode(_Model):
    """An adverse-action reason: a stable code and the text a declined applicant is given."""

    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,15}$")
    text: str = Field(min_length=1)


class PointsSpec(_Model):
    """Score scale: `base_score` at odds good:bad of `base_odds`; `pdo` points double the odds."""

    base_score: float = 600
    base_odds: float = Field(default=50, gt=0)
    pdo: float = Field(default=20, gt=0)
    min_score: float = 300
    max_score: float = 850

    @model_validator(mode="after")
    def _range(self) -> PointsSpec:
        if self.min_score >= self.max_score:
            raise ValueError(f"min_score ({self.min_score}) must be below max_score")
        return self


class ScoringSpec(_Model):
    """The scoring service: score scale, decision bands, reason codes, request limits; with
    `enabled: false` every application is referred to a person (the kill switch); with `shadow`
    the challenger (if the registry names one) scores every application too, unanswered."""

    enabled: bool = True
    points: PointsSpec = PointsSpec()
    decline_above_pd: float = Field(default=0.35, gt=0, lt=1)
    max_reason_codes: int = Field(default=4, ge=1, le=4)
    reason_codes: dict[str, ReasonCode]
    max_batch: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=16_000_000, ge=1024)
    # score the registry's `challenger` version beside the champion, off the answer path
    shadow: bool = True


class PartitionSpec(_Model):
    start_date: dt.date | None = None  # None: the first day landed for the entity source


class PipelineSpec(_Model):
    """A whole pipeline: validated on load, immutable afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str = Field(pattern=NAME)
    description: str = ""
    partitions: PartitionSpec = PartitionSpec()
    entity: EntitySpec
    sources: list[SourceSpec] = Field(min_length=1)
    target: TargetSpec
    features: FeatureSpec
    protected_attributes: list[str] = []
    model: ModelSpec = ModelSpec()
    gates: GateSpec = GateSpec()
    drift: DriftSpec = DriftSpec()
    scoring: ScoringSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        names = [s.name for s in self.sources]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"sources: duplicate source name '{name}'")
        by_name = {s.name: s for s in self.sources}
        if self.entity.source not in by_name:
            raise ValueError(f"entity.source: unknown source '{self.entity.source}'")
        if self.target.source not in by_name:
            raise ValueError(f"target.source: unknown source '{self.target.source}'")
        if self.target.source == self.entity.source:
            raise ValueError("target.source: the target must come from its own source")
        for name in (self.entity.source, self.target.source):
            if by_name[name].static:
                raise ValueError(f"sources ({name}): the entity and target sources are daily")
        primary_columns = by_name[self.entity.source].columns
        for i, source in enumerate(self.sources):
            if source.static:
                missing = [k for k in source.key if k not in primary_columns]
                if missing:
                    raise ValueError(
                        f"sources[{i}] ({source.name}): a static source joins on its key; "
                        f"key column(s) {', '.join(missing)} must be columns of the entity source"
                    )
                continue
            if self.entity.key not in source.columns:
                raise ValueError(
                    f"sources[{i}] ({source.name}): join key '{self.entity.key}' "
                    "(entity.key) is not one of its columns"
                )
        target_cols = by_name[self.target.source].columns
        if self.target.column not in target_cols:
            raise ValueError(
                f"target.column: '{self.target.column}' is not a column of "
                f"source '{self.target.source}'"
            )
        if target_cols[self.target.column].dtype not in ("int", "bool"):
            raise ValueError("target.column: the target must have dtype int (0/1) or bool")
        self._check_feature_columns()
        return self

    def _check_feature_columns(self) -> None:
        seen: dict[str, str] = {}
        for source in self.feature_sources:
            joins = {self.entity.key, *(source.key if source.static else [])}
            for column in source.columns:
                if column not in joins and column in seen:
                    raise ValueError(
                        f"sources ({source.name}): column '{column}' is also in source "
                        f"'{seen[column]}'; joined sources need distinct column names "
                        "(rename it with the source's `rename` or `prefix`)"
                    )
                seen[column] = source.name
        pii = {c for s in self.feature_sources for c in s.pii_columns}
        protected = set(self.protected_attributes)
        for i, attribute in enumerate(self.protected_attributes):
            if attribute not in seen:
                raise ValueError(f"protected_attributes[{i}]: unknown column '{attribute}'")
            if attribute in pii:
                raise ValueError(
                    f"protected_attributes[{i}]: '{attribute}' is PII; declare the protected "
                    "attribute as its own non-PII column (e.g. an age band, not a birth date)"
                )
        available = set(seen)
        for i, feature in enumerate(self.features.derived):
            path = f"features.derived[{i}] ({feature.name})"
            if feature.name in available:
                raise ValueError(f"{path}: name '{feature.name}' is already a column or feature")
            for column in sorted(referenced_columns(feature.expression)):
                if column not in available:
                    raise ValueError(f"{path}.expression: unknown column '{column}'")
                if column in pii:
                    raise ValueError(f"{path}.expression: column '{column}' is PII")
                if column in protected:
                    raise ValueError(
                        f"{path}.expression: '{column}' is a protected attribute; protected "
                        "attributes are for fairness measurement only"
                    )
            available.add(feature.name)
        derived_from = {f.name for f in self.features.derived}
        for i, name in enumerate(self.features.model_inputs):
            path = f"features.model_inputs[{i}]"
            if name in protected:
                raise ValueError(
                    f"{path}: '{name}' is a protected attribute and cannot be a model input"
                )
            if name in pii:
                raise ValueError(f"{path}: '{name}' is PII and cannot be a model input")
            if name not in available:
                raise ValueError(f"{path}: unknown column or feature '{name}'")
            if name == self.entity.key:
                raise ValueError(f"{path}: the join key cannot be a model input")
            if name not in derived_from and self.column(name).dtype in ("date", "string"):
                raise ValueError(f"{path}: '{name}' has dtype {self.column(name).dtype}")
        if len(set(self.features.model_inputs)) != len(self.features.model_inputs):
            raise ValueError("features.model_inputs: a feature is listed twice")
        fresh = self.features.freshness
        if fresh and fresh.column not in available:
            raise ValueError(f"features.freshness.column: unknown column '{fresh.column}'")
        inputs = set(self.features.model_inputs)
        for name in self.model.monotonic:
            if name not in inputs:
                raise ValueError(f"model.monotonic.{name}: not one of features.model_inputs")
            if name not in derived_from and self.column(name).dtype in ("category", "bool"):
                raise ValueError(f"model.monotonic.{name}: categorical inputs cannot be monotonic")
        exposure = self.model.exposure_column
        if exposure and exposure not in available:
            raise ValueError(f"model.exposure_column: unknown column '{exposure}'")
        if self.scoring is not None:
            self._check_reason_codes(inputs)

    def _check_reason_codes(self, inputs: set[str]) -> None:
        table = self.scoring.reason_codes
        for name in table:
            if name not in inputs:
                raise ValueError(f"scoring.reason_codes.{name}: not one of features.model_inputs")
        missing = [name for name in self.features.model_inputs if name not in table]
        if missing:
            raise ValueError(
                f"scoring.reason_codes: every model input needs a reason code; "
                f"missing: {', '.join(missing)}"
            )
        codes = [reason.code for reason in table.values()]
        for code in codes:
            if codes.count(code) > 1:
                raise ValueError(f"scoring.reason_codes: code '{code}' is used twice")

    @property
    def source_by_name(self) -> dict[str, SourceSpec]:
        return {s.name: s for s in self.sources}

    @property
    def primary_source(self) -> SourceSpec:
        return self.source_by_name[self.entity.source]

    @property
    def feature_sources(self) -> list[SourceSpec]:
        """Sources joined into the features: every source except the target's."""
        return [s for s in self.sources if s.name != self.target.source]

    def column(self, name: str) -> ColumnSpec:
        for source in self.sources:
            if name in source.columns:
                return source.columns[name]
        raise KeyError(name)

    @cached_property
    def digest(self) -> str:
        """Stable hash of the spec's content (for lineage)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def default_spec_path() -> Path:
    return Path(str(resources.files("lending_pipeline.specs").joinpath(DEFAULT_SPEC)))


def spec_path() -> Path:
    """The spec in force: `LENDING_PIPELINE_SPEC`, else the shipped consumer-loan spec."""
    return Path(os.environ.get(SPEC_ENV) or default_spec_path())


def load_spec(path: str | Path | None = None) -> PipelineSpec:
    """Read and validate a spec; raise SpecError naming file, field path and problem."""
    path = Path(path) if path is not None else spec_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"spec file '{path}': cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"spec file '{path}': not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec file '{path}': the top level must be a mapping")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(path, data, exc)) from None


def _format_errors(path: Path, data: dict, exc: ValidationError) -> str:
    lines = [f"spec file '{path}' is invalid:"]
    for error in exc.errors():
        location = _location(data, error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {location}: {message}" if location else f"  {message}")
    return "\n".join(lines)


def _location(data: Any, loc: tuple) -> str:
    """Render a pydantic error location, naming list items (sources[1] (bureau))."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label += f" ({node['name']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)
