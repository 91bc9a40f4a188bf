import asyncio
import json

import pytest

from lending_pipeline.serving import auth


@pytest.fixture(autouse=True)
def no_token_file(monkeypatch):
    monkeypatch.delenv(auth.TOKENS_FILE_ENV, raising=False)


def test_tokens_are_kept_as_hashes_and_identify_their_caller(monkeypatch):
    token, line = auth.new_token("origination", "scorer")
    admin, admin_line = auth.new_token("ops", "admin")
    assert token not in line and auth.digest(token) in line
    monkeypatch.setenv(auth.TOKENS_ENV, f"{line};{admin_line}")
    callers = auth.load_callers()
    assert auth.identify(callers, token).id == "origination"
    assert auth.identify(callers, admin).role == "admin"
    assert auth.identify(callers, token + "x") is None
    assert auth.identify(callers, None) is None


def test_token_config_errors_name_the_source_and_line(monkeypatch, tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# comment\nops:root:" + "a" * 64 + "\n")
    monkeypatch.delenv(auth.TOKENS_ENV, raising=False)
    monkeypatch.setenv(auth.TOKENS_FILE_ENV, str(path))
    with pytest.raises(auth.TokenConfigError, match=f"{path} line 2: unknown role 'root'"):
        auth.load_callers()
    monkeypatch.delenv(auth.TOKENS_FILE_ENV)
    with pytest.raises(auth.TokenConfigError, match="no API tokens"):
        auth.load_callers()


def call(middleware, path, headers=(), body=b"", chunks=None):
    """Drive the ASGI middleware once; returns (status, JSON body, what the app saw)."""
    seen = {}
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks or []]
    messages.append({"type": "http.request", "body": body, "more_body": False})
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        seen["caller"] = scope.get("state", {}).get("caller")
        seen["body"] = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware.app = app
    scope = {"type": "http", "path": path, "headers": list(headers)}
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"]), seen


@pytest.fixture
def middleware(monkeypatch):
    token, line = auth.new_token("origination", "scorer")
    monkeypatch.setenv(auth.TOKENS_ENV, line)
    return auth.AuthMiddleware(None, max_body_bytes=100), token


def test_middleware_authenticates_authorises_and_limits(middleware):
    layer, token = middleware
    bearer = [(b"authorization", f"Bearer {token}".encode())]
    assert call(layer, "/score")[0] == 401
    assert call(layer, "/score", [(b"authorization", b"Bearer nope")])[0] == 401
    assert call(layer, "/override", bearer)[0] == 403
    assert call(layer, "/score", [*bearer, (b"content-length", b"101")])[0] == 413
    assert call(layer, "/score", bearer, chunks=[b"x" * 60], body=b"y" * 60)[0] == 413
    status, _, seen = call(layer, "/score", bearer, chunks=[b"a" * 40], body=b"b" * 40)
    assert status == 200 and seen == {"caller": "origination", "body": b"a" * 40 + b"b" * 40}


def test_health_and_metrics_need_no_token(middleware):
    layer, _ = middleware
    for path in sorted(auth.OPEN_PATHS):
        status, _, seen = call(layer, path)
        assert status == 200 and seen["caller"] is None, path
