"""Request models built from the spec, and validation errors safe to return and to log.

A scoring request is one application in the raw shape the spec declares: every column of every
feature source, flat, the entity key once. Types, ranges, allowed values and nullability come from
the spec; the columns of a joined source are all optional (an applicant may have no bureau pull).
A date of a joined source after the application date is refused (point in time). PII fields are
replaced by their keyed pseudonyms right after validation. Validation errors name the field and
the rule, never the value sent (it may be personal data).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from lending_pipeline.ml.audit import canonical
from lending_pipeline.ml.pii import Pseudonymiser
from lending_pipeline.ml.scoring import request_columns
from lending_pipeline.spec import ColumnSpec, PipelineSpec

_TYPES: dict[str, type] = {"float": float, "int": int, "date": dt.date, "bool": bool, "string": str}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field(column: ColumnSpec, optional: bool) -> tuple[Any, Any]:
    kind: Any = _TYPES.get(column.dtype, str)
    if column.allowed:
        kind = Literal[tuple(column.allowed)]
    limits = {}
    if column.min is not None:
        limits["ge"] = column.min
    if column.max is not None:
        limits["le"] = column.max
    if column.dtype == "string":
        limits["max_length"] = 256
    if column.nullable or optional:
        return kind | None, Field(default=None, **limits)
    return kind, Field(..., **limits)


def application_model(spec: PipelineSpec) -> type[BaseModel]:
    """The pydantic model of one application for `spec`."""
    primary = spec.primary_source.columns
    fields = {
        name: _field(column, optional=name not in primary)
        for name, column in request_columns(spec).items()
    }
    name = spec.name.title().replace("_", "") + "Application"
    return create_model(name, __base__=_Request, **fields)


class RequestError(ValueError):
    """A request that breaks the spec's rules; `errors` name field and rule, never values."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


class RequestValidator:
    """Validates applications against the spec and pseudonymises their PII fields."""

    def __init__(self, spec: PipelineSpec, pii_key: bytes):
        self.model = application_model(spec)
        self.batch = TypeAdapter(list[self.model])
        self.pseudonym = Pseudonymiser(pii_key)
        self.pii = [name for name, column in request_columns(spec).items() if column.pii]
        self.applied = spec.primary_source.date_column
        self.joined = [
            (s.date_column, [c for c in s.columns if c not in (s.date_column, spec.entity.key)], s)
            for s in spec.feature_sources
            if s.name != spec.entity.source
        ]

    def __call__(self, data: Any) -> dict:
        """A validated application, PII replaced by pseudonyms (raises RequestError)."""
        try:
            record = self.model.model_validate(data).model_dump()
        except ValidationError as exc:
            raise RequestError(safe_errors(exc, "application")) from None
        errors = self._finish(record, "application")
        if errors:
            raise RequestError(errors)
        return record

    def many(self, data: list) -> list[dict]:
        """Validated applications (errors name `applications[i].field`)."""
        try:
            records = [item.model_dump() for item in self.batch.validate_python(data)]
        except ValidationError as exc:
            raise RequestError(safe_errors(exc, "applications")) from None
        errors = [e for i, r in enumerate(records) for e in self._finish(r, f"applications[{i}]")]
        if errors:
            raise RequestError(errors)
        return records

    def input_hmac(self, data: Any) -> str:
        """Keyed hash of an application as received (its canonical JSON): ties an audit entry to
        its input without storing the input."""
        return self.pseudonym.digest(canonical(data).encode())

    def _finish(self, record: dict, prefix: str) -> list[dict[str, str]]:
        """Pseudonymise PII in place; the errors of the joined sources' rules.

        A joined source (bureau pull, income verification) is all or nothing: without its date
        none of its fields may be sent (the applicant has no such record, as in training), and
        with it its non-nullable fields are required. Its date may not follow the application.
        """
        for name in self.pii:
            if record[name] is not None:
                record[name] = self.pseudonym(record[name])
        errors = []
        for date, fields, source in self.joined:
            if record[date] is None:
                sent = ", ".join(f for f in fields if record[f] is not None)
                if sent:
                    message = f"{sent} sent without {date} (a {source.name} record needs its date)"
                    errors.append(_error(prefix, date, "source_incomplete", message))
                continue
            for name in fields:
                if record[name] is None and not source.columns[name].nullable:
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
        out.append({"field": location, "rule": error["type"], "message": error["msg"]})
    return out
