"""Request models built from the spec, and validation errors safe to return and to log.

A scoring request is one application in the raw shape the spec declares: every column of every
feature source, flat, the entity key once. Types, ranges, allowed values and nullability come from
the spec; the columns of a joined source are all optional (an applicant may have no bureau pull).
A date of a joined source after the application date is refused (point in time). Types are
strict: no text for a number, no `true` for a count, no number for text; dates are ISO
`YYYY-MM-DD` text within their bounds (`date_bounds`). PII fields are replaced by their keyed
pseudonyms right after validation. Validation errors name the field and the rule, never the
value sent (it may be personal data).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from lending_pipeline.ml.audit import canonical
from lending_pipeline.ml.pii import Pseudonymiser
from lending_pipeline.ml.scoring import request_columns
from lending_pipeline.spec import ColumnSpec, PipelineSpec
from lending_pipeline.spec import date_bounds as spec_date_bounds

_TYPES: dict[str, type] = {"float": float, "int": int, "bool": bool, "string": str}
ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def date_bounds(column: ColumnSpec) -> tuple[dt.date, dt.date]:
    """The dates a request may carry in a date column: the spec's bounds for it (`earliest`,
    `latest`, as ingestion applies them), with tomorrow (UTC) for today: a day of slack for
    clients in other time zones."""
    return spec_date_bounds(column, dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1))


DATE_TEXT = Annotated[str, Field(pattern=ISO_DATE, json_schema_extra={"format": "date"})]


def _field(name: str, column: ColumnSpec, optional: bool) -> Any:
    kind: Any = DATE_TEXT if column.dtype == "date" else _TYPES.get(column.dtype, str)
    if column.allowed:
        kind = Literal[tuple(column.allowed)]
    limits: dict[str, Any] = {"allow_inf_nan": False} if column.dtype == "float" else {}
    if column.min is not None:
        limits["ge"] = column.min
    if column.max is not None:
        limits["le"] = column.max
    if column.dtype == "string":
        limits["max_length"] = 256
    if column.nullable or optional:
        return NotRequired[Annotated[kind | None, Field(**limits)]]
    return Annotated[kind, Field(**limits)]


def application_schema(spec: PipelineSpec) -> type:
    """The typed dict of one application for `spec` (pydantic validates it strictly; unknown
    fields are refused, optional ones may be left out)."""
    primary = spec.primary_source.columns
    fields = {
        name: _field(name, column, optional=name not in primary)
        for name, column in request_columns(spec).items()
    }
    schema = TypedDict(spec.name.title().replace("_", "") + "Application", fields)
    schema.__pydantic_config__ = ConfigDict(extra="forbid", strict=True)
    return schema


class RequestError(ValueError):
    """A request that breaks the spec's rules; `errors` name field and rule, never values."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


class RequestValidator:
    """Validates applications against the spec and pseudonymises their PII fields."""

    def __init__(self, spec: PipelineSpec, pii_key: bytes):
        schema = application_schema(spec)
        self.one = TypeAdapter(schema)
        self.batch = TypeAdapter(list[schema])
        self.blank = dict.fromkeys(sorted(request_columns(spec)))  # records keep this order
        self.pseudonym = Pseudonymiser(pii_key)
        self.pii = [name for name, column in request_columns(spec).items() if column.pii]
        self.applied = spec.primary_source.date_column
        self.dates = {
            name: column for name, column in request_columns(spec).items() if column.dtype == "date"
        }
        self.joined = []
        for source in spec.feature_sources:
            if source.name == spec.entity.source:
                continue
            fields = [c for c in source.columns if c not in (source.date_column, spec.entity.key)]
            required = [c for c in fields if not source.columns[c].nullable]
            self.joined.append((source.date_column, fields, required, source.name))

    def __call__(self, data: Any) -> dict:
        """A validated application, PII replaced by pseudonyms (raises RequestError)."""
        try:
            record = {**self.blank, **self.one.validate_python(data)}
        except ValidationError as exc:
            raise RequestError(safe_errors(exc, "application")) from None
        errors = self._finish(record, "application", self._bounds())
        if errors:
            raise RequestError(errors)
        return record

    def many(self, data: list) -> list[dict]:
        """Validated applications (errors name `applications[i].field`)."""
        try:
            records = [{**self.blank, **item} for item in self.batch.validate_python(data)]
        except ValidationError as exc:
            raise RequestError(safe_errors(exc, "applications")) from None
        bounds = self._bounds()
        errors = [
            e for i, r in enumerate(records) for e in self._finish(r, f"applications[{i}]", bounds)
        ]
        if errors:
            raise RequestError(errors)
        return records

    def input_hmac(self, data: Any) -> str:
        """Keyed hash of an application as received (its canonical JSON): ties an audit entry to
        its input without storing the input."""
        return self.pseudonym.digest(canonical(data).encode())

    def _bounds(self) -> dict[str, tuple[dt.date, dt.date]]:
        return {name: date_bounds(column) for name, column in self.dates.items()}

    def _finish(self, record: dict, prefix: str, bounds: dict) -> list[dict[str, str]]:
        """Dates parsed and bounded, PII pseudonymised, in place; the errors of those and of the
        joined sources' rules.

        A joined source (bureau pull, income verification) is all or nothing: without its date
        none of its fields may be sent (the applicant has no such record, as in training), and
        with it its non-nullable fields are required. Its date may not follow the application.
        """
        errors = []
        for name, (earliest, latest) in bounds.items():
            text = record[name]
            if text is None:
                continue
            try:
                value = dt.date.fromisoformat(text)
            except ValueError:
                errors.append(_error(prefix, name, "date", "not a calendar date (YYYY-MM-DD)"))
                continue
            if not earliest <= value <= latest:
                message = f"must lie between {earliest} and {latest}"
                errors.append(_error(prefix, name, "date_range", message))
            record[name] = value
        if errors:
            return errors
        for name in self.pii:
            if record[name] is not None:
                record[name] = self.pseudonym(record[name])
        for date, fields, required, source in self.joined:
            if record[date] is None:
                sent = ", ".join(f for f in fields if record[f] is not None)
                if sent:
                    message = f"{sent} sent without {date} (a {source} record needs its date)"
                    errors.append(_error(prefix, date, "source_incomplete", message))
                continue
            for name in required:
                if record[name] is None:
                    errors.append(_error(prefix, name, "missing", f"required with {date}"))
            if record[date] > record[self.applied]:
                message = f"{date} is after {self.applied}: data from after the application"
                errors.append(_error(prefix, date, "point_in_time", message + " cannot be used"))
        return errors


def _error(prefix: str, field: str, rule: str, message: str) -> dict[str, str]:
    return {"field": f"{prefix}.{field}", "rule": rule, "message": message}


def safe_errors(exc: ValidationError, prefix: str) -> list[dict[str, str]]:
    """Field, rule and message of each error, without the input value."""
    out = []
    for error in exc.errors(include_input=False, include_context=False, include_url=False):
        location = prefix
        for part in error["loc"]:
            location += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = error["msg"].removeprefix("Value error, ")
        out.append({"field": location, "rule": error["type"], "message": message})
    return out
