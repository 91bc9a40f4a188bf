"""The scoring API's OpenAPI document, built from the spec (served at `GET /docs.json`).

It documents what the service does: the application's real schema (types, ranges, allowed
values, required fields, date format), every route's answer and every status code it can send,
all errors in the one shape the front door and the service use.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from lending_pipeline.serving.front import ROUTES
from lending_pipeline.serving.requests import application_schema
from lending_pipeline.spec import PipelineSpec

DECISIONS = ["approve", "refer", "decline"]
REF = "#/components/schemas/{model}"
ERROR_STATUSES = {
    "400": "the body is not UTF-8 JSON, repeats a key or holds NaN/Infinity",
    "401": "missing or unknown bearer token",
    "403": "the caller's role may not call this route",
    "413": "the body is over the size limit",
    "415": "the body is not sent as application/json",
    "422": "a field breaks the spec's rules (named with the rule, never the value)",
    "503": "not ready: the audit log cannot be written (or scoring is starting); retry",
}


def _ref(name: str) -> dict:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _error_schema() -> dict:
    problem = {
        "type": "object",
        "required": ["field", "rule", "message"],
        "properties": {
            "field": {"type": "string"},
            "rule": {"type": "string"},
            "message": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "array", "items": problem}},
    }


def _answer_schema(spec: PipelineSpec) -> dict:
    scale = spec.scoring.points
    reason = {
        "type": "object",
        "required": ["code", "feature", "text"],
        "properties": {
            "code": {"type": "string"},
            "feature": {"type": "string"},
            "text": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "required": [
            "request_id",
            "model",
            "probability_of_default",
            "score",
            "decision",
            "reason_codes",
            "suspended",
        ],
        "properties": {
            "request_id": {"type": "string"},
            "model": {
                "type": "object",
                "required": ["name", "version"],
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            },
            "probability_of_default": {"type": "number", "minimum": 0, "maximum": 1},
            "score": {
                "type": "integer",
                "minimum": int(scale.min_score),
                "maximum": int(scale.max_score),
            },
            "decision": {"type": "string", "enum": DECISIONS},
            "reason_codes": {
                "type": "array",
                "maxItems": spec.scoring.max_reason_codes,
                "items": reason,
            },
            "suspended": {
                "type": "boolean",
                "description": "the kill switch is engaged: a person decides (decision refer)",
            },
        },
    }


def _bodies(spec: PipelineSpec) -> dict[str, dict]:
    """Request body schema per route."""
    override = {
        "type": "object",
        "required": ["request_id", "decision", "reason"],
        "properties": {
            "request_id": {"type": "string", "minLength": 1, "maxLength": 80},
            "decision": {"type": "string", "enum": DECISIONS},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": r"\S"},
        },
    }
    return {
        "/score": {"application": _ref("Application")},
        "/score_batch": {
            "applications": {
                "type": "array",
                "minItems": 1,
                "maxItems": spec.scoring.max_batch,
                "items": _ref("Application"),
            }
        },
        "/override": {"override": override},
        "/rollback": {
            "reason": {"type": "string", "minLength": 1, "pattern": r"\S"},
            "to_version": {"type": "string"},
        },
        "/kill_switch": {
            "engaged": {"type": "boolean"},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": r"\S"},
        },
    }


def _answers(spec: PipelineSpec) -> dict[str, dict]:
    """The 200 answer per route."""
    return {
        "/score": _ref("Answer"),
        "/score_batch": {
            "type": "object",
            "required": ["batch_id", "results"],
            "properties": {
                "batch_id": {"type": "string"},
                "results": {"type": "array", "items": _ref("Answer")},
            },
        },
        "/override": {
            "type": "object",
            "required": ["recorded", "audit_seq", "request_id", "decision_of_record"],
            "properties": {
                "recorded": {"type": "boolean"},
                "audit_seq": {"type": "integer"},
                "request_id": {"type": "string"},
                "decision_of_record": {"type": "string", "enum": DECISIONS},
                "previous_decision": {"type": "string", "enum": DECISIONS},
                "model_decision": {"type": "string", "enum": DECISIONS},
            },
        },
        "/rollback": {"type": "object"},
        "/kill_switch": {
            "type": "object",
            "required": ["engaged", "reason", "by", "since"],
            "properties": {"engaged": {"type": "boolean"}, "audit_seq": {"type": "integer"}},
        },
    }


def document(spec: PipelineSpec) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the scoring API for `spec`."""
    application = TypeAdapter(application_schema(spec)).json_schema(ref_template=REF)
    definitions = application.pop("$defs", {})
    schemas = {
        **definitions,
        "Application": application,
        "Answer": _answer_schema(spec),
        "Error": _error_schema(),
    }
    bodies, answers = _bodies(spec), _answers(spec)
    paths: dict[str, Any] = {}
    for path, route in ROUTES.items():
        fields = bodies[path]
        statuses = dict(ERROR_STATUSES)
        if route.role != "admin":
            statuses.pop("403")
        if path == "/rollback":
            statuses["409"] = "nothing to roll back to"
        if path == "/override":
            statuses["404"] = "no served decision has this request id"
        responses = {"200": {"description": "done", "content": _json(answers[path])}}
        for status, meaning in statuses.items():
            responses[status] = {"description": meaning, "content": _json(_ref("Error"))}
        paths[path] = {
            "post": {
                "operationId": path.strip("/"),
                "summary": f"{path} ({route.role})",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": _json(
                        {
                            "type": "object",
                            "required": sorted(route.required),
                            "properties": fields,
                            "additionalProperties": False,
                        }
                    ),
                },
                "responses": responses,
            }
        }
    for path, meaning in (
        ("/livez", "the server process is alive"),
        ("/readyz", "the model is loaded and decisions can be audited"),
        ("/healthz", "alias of /livez"),
        ("/metrics", "Prometheus metrics"),
    ):
        responses = {"200": {"description": meaning, "content": {"text/plain": {}}}}
        if path == "/readyz":
            responses["503"] = {"description": "not ready", "content": {"text/plain": {}}}
        paths[path] = {"get": {"operationId": path.strip("/"), "responses": responses}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{spec.name} scoring API",
            "version": spec.digest[:12],
            "description": (
                "Probability of default, score, decision and adverse-action reason codes for "
                "one application (or a batch), audited. Errors: "
                '{"error": text, "detail": [{"field", "rule", "message"}]}; values sent are '
                "never echoed."
            ),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }


def document_bytes(spec: PipelineSpec) -> bytes:
    return json.dumps(document(spec), sort_keys=True).encode()
