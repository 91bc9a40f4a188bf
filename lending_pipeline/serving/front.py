"""The scoring service's front door: ASGI middleware in front of BentoML's routes.

Every request is answered here unless it is a well-formed call of a route the service has:
unknown routes 404, wrong methods 405, missing or unknown tokens 401, a role without the right
403, bodies over the limit 413 (before they are read whole), anything but `application/json`
415, a body that is not one JSON object, or repeats a key, or carries NaN/Infinity 400, top-level
fields the route does not take or lacks 422. So BentoML only ever parses a JSON object of the
right shape, and its error paths (which log the input they failed on) are never taken.

All errors have one shape, `{"error": text, "detail": [{"field", "rule", "message"}]}`, and
never carry a value that was sent (a field name is echoed only when the spec declares it).
The access log is written here, one line per request: method, route (or `-` for an unknown
path), status, milliseconds and the caller's configured id; no path a client made up, no query
string, no header, no body. `GET /docs.json` answers the OpenAPI document built from the spec.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from lending_pipeline.serving.auth import bearer_token, identify, load_callers

LOG = logging.getLogger("lending_pipeline.serving.access")
JSON_TYPES = ("application/json",)


@dataclass(frozen=True)
class Route:
    role: str  # the least role that may call it
    fields: frozenset[str]  # top-level fields of its body
    required: frozenset[str]


ROUTES = {
    "/score": Route("scorer", frozenset({"application"}), frozenset({"application"})),
    "/score_batch": Route("scorer", frozenset({"applications"}), frozenset({"applications"})),
    "/override": Route("admin", frozenset({"override"}), frozenset({"override"})),
    "/rollback": Route("admin", frozenset({"reason", "to_version"}), frozenset({"reason"})),
    "/kill_switch": Route(
        "admin", frozenset({"engaged", "reason"}), frozenset({"engaged", "reason"})
    ),
}
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/"})
OPEN_PREFIXES = ("/static_content/",)
QUIET_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})  # probed every second
ADMIN_PATHS = frozenset(path for path, route in ROUTES.items() if route.role == "admin")


def error_body(message: str, detail: list[dict] | None = None) -> bytes:
    return json.dumps({"error": message, "detail": detail or []}).encode()


def problem(field: str, rule: str, message: str) -> dict[str, str]:
    return {"field": field, "rule": rule, "message": message}


class BadBody(ValueError):
    """A body that is not acceptable JSON; `detail` names where and why, never a value."""

    def __init__(self, status: int, message: str, detail: list[dict]):
        super().__init__(message)
        self.status = status
        self.detail = detail


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


class JsonReader:
    """Parses a request body strictly: UTF-8, one JSON object, no repeated key at any depth,
    no NaN or Infinity. Names a repeated key only when it is one of `known` names."""

    def __init__(self, known: set[str]):
        self.known = known
        self._decoder = json.JSONDecoder(
            object_pairs_hook=self._object, parse_constant=_reject_constant
        )

    def _object(self, pairs: list[tuple[str, object]]) -> dict:
        found = dict(pairs)
        if len(found) != len(pairs):
            seen: set[str] = set()
            repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
            name = repeated if repeated in self.known else "a field"
            raise BadBody(
                400,
                "invalid JSON body",
                [problem("body", "duplicate_key", f"{name} is given more than once")],
            )
        return found

    def __call__(self, body: bytes) -> dict:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            detail = [problem("body", "encoding", f"not UTF-8 (byte {exc.start})")]
            raise BadBody(400, "invalid JSON body", detail) from None
        try:
            value = self._decoder.decode(text)
        except BadBody:
            raise
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno} column {exc.colno}"
            detail = [problem("body", "json", f"{exc.msg} at {where}")]
            raise BadBody(400, "invalid JSON body", detail) from None
        except (ValueError, RecursionError) as exc:
            message = str(exc) if "JSON number" in str(exc) else "nested too deeply"
            raise BadBody(400, "invalid JSON body", [problem("body", "json", message)]) from None
        if not isinstance(value, dict):
            detail = [problem("body", "type", "the body must be a JSON object")]
            raise BadBody(422, "invalid request", detail)
        return value


def check_fields(route: Route, body: dict) -> list[dict]:
    """Problems with a body's top-level fields for `route` (unknown names are not echoed)."""
    problems = [
        problem(name, "missing", "required") for name in sorted(route.required - body.keys())
    ]
    if body.keys() - route.fields:
        allowed = ", ".join(sorted(route.fields))
        problems.append(
            problem("body", "extra_forbidden", f"unknown top-level field (allowed: {allowed})")
        )
    return problems


class FrontDoor:
    """Routes, authenticates, authorises, bounds and checks request bodies (see module doc)."""

    def __init__(self, app, max_body_bytes: int, known_fields=(), openapi: bytes = b"{}"):
        self.app = app
        self.callers = load_callers()
        self.max_body_bytes = max_body_bytes
        known = {name for route in ROUTES.values() for name in route.fields}
        self.read_json = JsonReader(known | set(known_fields))
        self.openapi = openapi

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        path, method = scope["path"], scope.get("method", "GET")
        known_route = path in ROUTES or path in OPEN_PATHS
        caller = "-"
        status = 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
                if method not in ("GET", "HEAD"):
                    return await reply(sending, 405, "use GET", allow=b"GET, HEAD")
                if path == "/docs.json":
                    return await reply_bytes(sending, 200, self.openapi)
                return await self.app(scope, receive, sending)
            route = ROUTES.get(path)
            if route is None:
                return await reply(sending, 404, "no such route (see /docs.json)")
            if method != "POST":
                return await reply(sending, 405, f"{path} takes POST", allow=b"POST")
            headers = dict(scope["headers"])
            found = identify(self.callers, bearer_token(headers.get(b"authorization", b"")))
            if found is None:
                return await reply(sending, 401, "missing or invalid bearer token", bearer=True)
            caller = found.id
            if route.role == "admin" and found.role != "admin":
                return await reply(sending, 403, f"role '{found.role}' may not call {path}")
            too_large = f"request body over {self.max_body_bytes} bytes"
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                return await reply(sending, 413 if length.isdigit() else 400, too_large)
            media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip()
            if media.lower() not in JSON_TYPES:
                return await reply(sending, 415, "send the body as application/json")
            body, over = await read_body(receive, self.max_body_bytes)
            if over:
                return await reply(sending, 413, too_large)
            try:
                problems = check_fields(route, self.read_json(body))
            except BadBody as exc:
                return await reply(sending, exc.status, str(exc), exc.detail)
            if problems:
                return await reply(sending, 422, "invalid request", problems)
            scope.setdefault("state", {})["caller"] = caller
            return await self.app(scope, replay(body, receive), sending)
        finally:
            if path not in QUIET_PATHS:
                LOG.info(
                    "%s %s %d %.1fms caller=%s",
                    method if method.isalpha() and len(method) <= 8 else "-",
                    path if known_route else "-",
                    status,
                    (time.perf_counter() - began) * 1000,
                    caller,
                )


async def read_body(receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def replay(body: bytes, receive):
    """Hand the buffered body to the app once, then pass through (e.g. a disconnect)."""
    sent = False

    async def again():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


async def reply(
    send,
    status: int,
    message: str,
    detail: list | None = None,
    bearer: bool = False,
    allow: bytes | None = None,
) -> None:
    headers = [(b"www-authenticate", b"Bearer")] if bearer else []
    if allow:
        headers.append((b"allow", allow))
    await reply_bytes(send, status, error_body(message, detail), headers)


async def reply_bytes(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
