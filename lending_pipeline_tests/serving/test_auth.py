import asyncio
import json

import pytest

from lending_pipeline.serving import auth, front


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


JSON = (b"content-type", b"application/json")


def call(middleware, path, headers=(), body=b"", chunks=None, method="POST"):
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
    scope = {"type": "http", "path": path, "method": method, "headers": list(headers)}
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"]), seen


@pytest.fixture
def middleware(monkeypatch):
    token, line = auth.new_token("origination", "scorer")
    monkeypatch.setenv(auth.TOKENS_ENV, line)
    return front.FrontDoor(None, max_body_bytes=100, known_fields=("ssn",)), token


def test_middleware_authenticates_authorises_and_limits(middleware):
    layer, token = middleware
    bearer = [(b"authorization", f"Bearer {token}".encode()), JSON]
    assert call(layer, "/score")[0] == 401
    assert call(layer, "/score", [(b"authorization", b"Bearer nope")])[0] == 401
    assert call(layer, "/override", bearer)[0] == 403
    assert call(layer, "/score", [*bearer, (b"content-length", b"101")])[0] == 413
    assert call(layer, "/score", bearer, chunks=[b"x" * 60], body=b"y" * 60)[0] == 413
    body = b'{"application": {"a": 1}}'
    status, _, seen = call(layer, "/score", bearer, chunks=[body[:10]], body=body[10:])
    assert status == 200 and seen == {"caller": "origination", "body": body}


def test_health_and_metrics_need_no_token(middleware):
    layer, _ = middleware
    for path in sorted(front.OPEN_PATHS - {"/docs.json"}):
        status, _, seen = call(layer, path, method="GET")
        assert status == 200 and seen["caller"] is None, path


def test_unknown_routes_and_methods_are_refused_before_the_service(middleware):
    layer, token = middleware
    bearer = [(b"authorization", f"Bearer {token}".encode()), JSON]
    status, body, seen = call(layer, "/score/123-45-6789", bearer, body=b"{}")
    assert status == 404 and not seen and "123-45-6789" not in json.dumps(body)
    assert call(layer, "/score", bearer, method="GET")[0] == 405
    assert call(layer, "/readyz", method="POST")[0] == 405


@pytest.mark.parametrize(
    "content_type, body, status, rule",
    [
        (b"multipart/form-data", b"--x", 415, None),
        (b"application/x-www-form-urlencoded", b"ssn=1", 415, None),
        (b"", b"{}", 415, None),
        (b"application/json", b'[{"ssn": "1"}]', 422, "type"),
        (b"application/json", b'"Jane Roe"', 422, "type"),
        (b"application/json", b'{"application": {"ssn": "1", "ssn": "2"}}', 400, "duplicate_key"),
        (b"application/json", b'{"application": {"Jane": 1, "Jane": 2}}', 400, "duplicate_key"),
        (b"application/json", b'{"application": {"x": NaN}}', 400, "json"),
        (b"application/json", b'{"application": {"x": -Infinity}}', 400, "json"),
        (b"application/json", b'{"application": {"ssn": "1"', 400, "json"),
        (b"application/json", b"\xff\xfe{}", 400, "encoding"),
        (b"application/json", b'{"applicant": {}}', 422, "missing"),
        (b"application/json", b'{"application": {}, "Jane Roe": 1}', 422, "extra_forbidden"),
    ],
)
def test_bodies_that_are_not_one_json_object_of_the_route_are_refused(
    middleware, content_type, body, status, rule
):
    layer, token = middleware
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", content_type)]
    got, answer, seen = call(layer, "/score", headers, body=body)
    assert got == status and not seen
    assert set(answer) == {"error", "detail"}
    if rule:
        assert rule in {problem["rule"] for problem in answer["detail"]}
    text = json.dumps(answer)
    assert "Jane" not in text and '"2"' not in text


def test_a_repeated_key_is_named_only_when_the_spec_declares_it(middleware):
    reader = middleware[0].read_json
    with pytest.raises(front.BadBody) as known:
        reader(b'{"application": {"ssn": "1", "ssn": "2"}}')
    with pytest.raises(front.BadBody) as unknown:
        reader(b'{"application": {"a": {"Jane": 1, "Jane": 2}}}')
    assert known.value.detail[0]["message"] == "ssn is given more than once"
    assert unknown.value.detail[0]["message"] == "a field is given more than once"
