"""Bearer-token authentication, roles and the request-size limit, as ASGI middleware.

Tokens are never stored: the service knows the SHA-256 of each, with a caller id and a role,
one `caller:role:sha256` per line, from `LENDING_API_TOKENS` (lines or `;`-separated) and/or the
file named by `LENDING_API_TOKENS_FILE`. `lending-pipeline token` makes a token and its line.
A presented token is hashed and compared with every stored hash in constant time.

Roles: `scorer` may score; `admin` may also override decisions and roll back. Health and metrics
endpoints stay open. Missing or unknown token: 401; a role without the right: 403; a body over
the limit: 413.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

TOKENS_ENV = "LENDING_API_TOKENS"
TOKENS_FILE_ENV = "LENDING_API_TOKENS_FILE"
ROLES = ("scorer", "admin")
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
ADMIN_PATHS = frozenset({"/override", "/rollback"})


class TokenConfigError(ValueError):
    """Token configuration that cannot be used (names the source and line, never a token)."""


@dataclass(frozen=True)
class Caller:
    id: str
    role: str
    digest: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(caller: str, role: str) -> tuple[str, str]:
    """A fresh token and the line that lets the service accept it."""
    if role not in ROLES:
        raise TokenConfigError(f"role '{role}' is not one of {', '.join(ROLES)}")
    token = secrets.token_urlsafe(32)
    return token, f"{caller}:{role}:{digest(token)}"


def parse(text: str, source: str) -> list[Caller]:
    callers = []
    lines = text.replace(";", "\n").splitlines()
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or len(parts[2]) != 64:
            raise TokenConfigError(f"{source} line {number}: expected caller:role:sha256-hex")
        caller, role, hashed = parts
        if role not in ROLES:
            raise TokenConfigError(f"{source} line {number}: unknown role '{role}'")
        callers.append(Caller(caller, role, hashed.lower()))
    return callers


def load_callers() -> list[Caller]:
    """Callers from the environment and the token file; refuses to run with none."""
    callers = parse(os.environ.get(TOKENS_ENV, ""), TOKENS_ENV)
    path = os.environ.get(TOKENS_FILE_ENV)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenConfigError(f"{TOKENS_FILE_ENV} '{path}': cannot be read ({exc})") from None
        callers += parse(text, path)
    if not callers:
        raise TokenConfigError(
            f"no API tokens: set {TOKENS_ENV} or {TOKENS_FILE_ENV} "
            "(lending-pipeline token --caller NAME --role scorer makes one)"
        )
    return callers


def identify(callers: list[Caller], token: str | None) -> Caller | None:
    """The caller a token belongs to; every stored hash is compared, in constant time."""
    if not token:
        return None
    presented = digest(token)
    found = None
    for caller in callers:
        if hmac.compare_digest(presented, caller.digest):
            found = caller
    return found


class AuthMiddleware:
    """Authenticates, authorises and bounds request bodies before the service sees them."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.callers = load_callers()
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        caller = identify(self.callers, _bearer(headers.get(b"authorization", b"")))
        if caller is None:
            return await _reply(send, 401, "missing or invalid bearer token", _CHALLENGE)
        if scope["path"] in ADMIN_PATHS and caller.role != "admin":
            return await _reply(send, 403, f"role '{caller.role}' may not call {scope['path']}")
        length = headers.get(b"content-length")
        if length is not None and int(length) > self.max_body_bytes:
            return await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
        body, too_large = await _read_body(receive, self.max_body_bytes)
        if too_large:
            return await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
        scope.setdefault("state", {})["caller"] = caller.id
        return await self.app(scope, _replay(body, receive), send)


_CHALLENGE = [(b"www-authenticate", b"Bearer")]


def _bearer(value: bytes) -> str | None:
    scheme, _, token = value.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def _read_body(receive, limit: int) -> tuple[bytes, bool]:
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


def _replay(body: bytes, receive):
    """Hand the buffered body to the app once, then pass through (e.g. a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _reply(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
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
