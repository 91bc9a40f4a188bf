"""Bearer tokens: how callers and their roles are configured and recognised.

Tokens are never stored: the service knows the SHA-256 of each, with a caller id and a role,
one `caller:role:sha256` per line, from `LENDING_API_TOKENS` (lines or `;`-separated) and/or the
file named by `LENDING_API_TOKENS_FILE`. `lending-pipeline token` makes a token and its line.
A presented token is hashed and compared with every stored hash in constant time.

Roles: `scorer` may score; `admin` may also override decisions and roll back. The service's
front door (`front.py`) applies them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

TOKENS_ENV = "LENDING_API_TOKENS"
TOKENS_FILE_ENV = "LENDING_API_TOKENS_FILE"
ROLES = ("scorer", "admin")


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


def bearer_token(value: bytes) -> str | None:
    """The token of an `Authorization: Bearer ...` header value, or None."""
    scheme, _, token = value.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


ADMIN_TOKEN_ENV = "LENDING_ADMIN_TOKEN"


def admin_identity(token: str | None) -> str:
    """The caller id of an administrator's token (from `LENDING_ADMIN_TOKEN` for commands that
    need the admin role, such as `package --force`); refuses any other token."""
    if not token:
        raise TokenConfigError(f"this needs the admin role: set {ADMIN_TOKEN_ENV} to its token")
    caller = identify(load_callers(), token)
    if caller is None or caller.role != "admin":
        raise TokenConfigError(f"{ADMIN_TOKEN_ENV} is not the token of an admin caller")
    return caller.id
