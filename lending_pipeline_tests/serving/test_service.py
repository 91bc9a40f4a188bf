"""The scoring API over real HTTP: a `bentoml serve` process behind `lending-pipeline serve`."""

import datetime as dt
import json
import os
import shutil
import sqlite3
import stat
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from lending_pipeline.defs.resources import MlflowTracking
from lending_pipeline.ml import audit, tracking
from lending_pipeline.ml.synth import BUREAU_COLUMNS
from lending_pipeline.ml.train import predict
from lending_pipeline.serving.deploy import read_record
from lending_pipeline_tests.serving.conftest import wait_for

BUREAU_FIELDS = ["pull_date", *BUREAU_COLUMNS]


def test_a_decision_has_probability_score_decision_and_model(deployment):
    with deployment.client() as client:
        response = client.post("/score", json={"application": deployment.records[0]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "request_id",
        "model",
        "probability_of_default",
        "score",
        "decision",
        "reason_codes",
        "suspended",
    }
    assert body["model"] == {"name": deployment.config.registered_model, "version": "2"}
    assert 0 < body["probability_of_default"] < 1
    scale = deployment.spec.scoring.points
    assert scale.min_score <= body["score"] <= scale.max_score
    assert body["decision"] in ("approve", "refer", "decline")


@pytest.mark.parametrize(
    "token, path, status",
    [
        (None, "/score", 401),
        ("not-a-token", "/score", 401),
        ("scorer", "/override", 403),
        ("scorer", "/rollback", 403),
    ],
)
def test_authentication_and_roles(deployment, token, path, status):
    bodies = {"/score": {"application": deployment.records[0]}, "/override": {"override": {}}}
    body = bodies.get(path, {"reason": "try"})
    with deployment.client(token) as client:
        response = client.post(path, json=body)
    assert response.status_code == status
    assert deployment.scorer_token not in response.text


def test_health_endpoints_stay_open(deployment):
    with deployment.client(None) as client:
        for path in ("/livez", "/readyz", "/healthz", "/metrics"):
            assert client.get(path).status_code == 200, path


def test_an_override_changes_the_decision_of_record(deployment):
    """An admin override becomes what the audit log says was decided for that request (the
    CLI's `audit decision` reads it back), is counted per caller, and an unknown id is refused."""
    with deployment.client() as client:
        served = client.post("/score_batch", json={"applications": deployment.records[:3]})
    first = served.json()["results"][1]
    other = "decline" if first["decision"] == "approve" else "approve"
    with deployment.client(None) as client:
        before = metric_values(client.get("/metrics").text, "lending_overrides_total")
    with deployment.client("admin") as client:
        body = {"request_id": first["request_id"], "decision": other, "reason": "manual review"}
        changed = client.post("/override", json={"override": body})
        back = client.post("/override", json={"override": {**body, "decision": "refer"}})
        unknown = client.post("/override", json={"override": {**body, "request_id": "nope"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["decision_of_record"] == other
    assert changed.json()["previous_decision"] == first["decision"]
    assert back.json()["previous_decision"] == other
    assert unknown.status_code == 404 and unknown.json()["detail"][0]["rule"] == "unknown"
    shown = deployment.cli("audit", "decision", first["request_id"])
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["decision"] == "refer" and record["decided_by"] == "risk-ops"
    assert record["model_decision"] == first["decision"] and len(record["overrides"]) == 2
    assert deployment.cli("audit", "decision", "nope").returncode == 1
    with deployment.client(None) as client:
        after = metric_values(client.get("/metrics").text, "lending_overrides_total")
    for decision in (other, "refer"):
        label = f'{{caller="risk-ops",decision="{decision}"}}'
        assert after[label] - before.get(label, 0.0) == 1, label


def test_the_kill_switch_refers_everyone_until_lifted(deployment):
    records = deployment.records[:80]
    with deployment.client() as client:
        refused = client.post("/kill_switch", json={"engaged": True, "reason": "try"})
        normal = client.post("/score_batch", json={"applications": records}).json()["results"]
    assert refused.status_code == 403
    model = [r["decision"] for r in normal]
    assert set(model) != {"refer"} and not any(r["suspended"] for r in normal)
    try:
        with deployment.client("admin") as client:
            engaged = client.post("/kill_switch", json={"engaged": True, "reason": "incident 42"})
        assert engaged.status_code == 200 and engaged.json()["engaged"] is True, engaged.text
        with deployment.client() as client:
            held = [client.post("/score", json={"application": r}).json() for r in records[:10]]
            batch = client.post("/score_batch", json={"applications": records}).json()["results"]
        assert {r["decision"] for r in held + batch} == {"refer"}
        assert all(r["suspended"] for r in held + batch)
        probabilities = [r["probability_of_default"] for r in batch]
        assert probabilities == [r["probability_of_default"] for r in normal]
    finally:
        lifted = deployment.cli("kill-switch", "lift", "--reason", "incident 42 resolved")
    assert lifted.returncode == 0, lifted.stderr
    with deployment.client() as client:
        again = client.post("/score_batch", json={"applications": records}).json()["results"]
    assert [r["decision"] for r in again] == model
    reader = audit.open_reader(deployment.data_dir)
    entries = reader.entries()
    reader.close()
    switches = [e.data for e in entries if e.kind == "kill_switch"][-2:]
    assert [s["engaged"] for s in switches] == [True, False]
    assert switches[0]["by"] == "risk-ops (API)" and "CLI" in switches[1]["by"]
    suspended = [e.data for e in entries if e.kind == "decision" and e.data.get("suspended")]
    assert len(suspended) >= 90 and all(d["decision"] == "refer" for d in suspended)
    assert {d["model_decision"] for d in suspended} == set(model)


def test_invalid_fields_get_422_naming_field_and_rule_without_the_value(deployment):
    application = dict(deployment.records[0])
    application |= {"loan_amount": 10**8, "purpose": "yacht", "ssn": 123456789}
    application["pull_date"] = "2099-01-01"
    with deployment.client() as client:
        response = client.post("/score", json={"application": application})
        applied = dt.date.fromisoformat(deployment.records[0]["application_date"])
        late = dict(deployment.records[0], pull_date=str(applied + dt.timedelta(days=1)))
        point_in_time = client.post("/score", json={"application": late})
    assert response.status_code == 422
    rules = {(e["field"], e["rule"]) for e in response.json()["detail"]}
    assert ("application.loan_amount", "less_than_equal") in rules
    assert ("application.purpose", "literal_error") in rules
    assert ("application.ssn", "string_type") in rules
    assert "123456789" not in response.text and "yacht" not in response.text
    assert point_in_time.status_code == 422
    assert point_in_time.json()["detail"][0]["rule"] == "point_in_time"


def test_a_joined_source_is_all_or_nothing(deployment):
    record = next(r for r in deployment.records if r["pull_date"] is not None)
    partial = dict(record, delinquencies_24m=None, inquiries_6m=None)
    no_date = dict(record, pull_date=None)
    no_bureau = dict(record, **{name: None for name in BUREAU_FIELDS})
    with deployment.client() as client:
        missing = client.post("/score", json={"application": partial})
        undated = client.post("/score", json={"application": no_date})
        without = client.post("/score", json={"application": no_bureau})
    assert missing.status_code == 422
    assert {(e["field"], e["rule"]) for e in missing.json()["detail"]} == {
        ("application.delinquencies_24m", "missing")
    }
    assert undated.status_code == 422
    assert undated.json()["detail"][0]["rule"] == "source_incomplete"
    assert without.status_code == 200, without.text


def test_malformed_bodies_get_422_and_leave_no_trace_in_the_logs(deployment):
    secret = "Jane Placeholder 987-65-4321"
    with deployment.client() as client:
        not_an_object = client.post("/score", json={"application": secret})
        no_application = client.post("/score", json={"applicant": {"ssn": secret}})
        not_a_list = client.post("/score_batch", json={"applications": secret})
    assert [r.status_code for r in (not_an_object, no_application, not_a_list)] == [422] * 3
    for response in (not_an_object, no_application, not_a_list):
        assert secret not in response.text
    time.sleep(1)  # let the access log flush
    logs = b"".join(p.read_bytes() for p in deployment.data_dir.glob("serving/logs/*.log"))
    assert secret.encode() not in logs


def test_oversized_bodies_get_413_with_or_without_a_length(deployment):
    limit = deployment.spec.scoring.max_body_bytes
    with deployment.client() as client:
        declared = client.post(
            "/score", content=b" " * (limit + 1), headers={"content-type": "application/json"}
        )
        chunked = client.post(
            "/score",
            content=(b" " * 65536 for _ in range(limit // 65536 + 2)),
            headers={"content-type": "application/json"},
        )
    assert declared.status_code == 413
    assert chunked.status_code == 413


def test_batch_scores_equal_training_batch_scores(deployment):
    records = deployment.records[:500]
    with deployment.client() as client:
        response = client.post("/score_batch", json={"applications": records})
        limit = deployment.spec.scoring.max_batch
        too_many = client.post("/score_batch", json={"applications": records[:1] * (limit + 1)})
        empty = client.post("/score_batch", json={"applications": []})
    assert response.status_code == 200, response.text[:500]
    served = np.array([r["probability_of_default"] for r in response.json()["results"]])
    model = deployment.versions["2"].model
    batch = predict(deployment.spec, model, deployment.features.iloc[:500])
    np.testing.assert_allclose(served, batch, atol=1e-6)  # the API rounds to 6 decimals
    assert too_many.status_code == 422 and empty.status_code == 422
    assert too_many.json()["detail"][0]["rule"] == "batch_size"


def test_declines_carry_at_most_four_reason_codes_from_the_table(deployment):
    with deployment.client() as client:
        response = client.post("/score_batch", json={"applications": deployment.records[:400]})
    results = response.json()["results"]
    adverse = [r for r in results if r["decision"] != "approve"]
    assert adverse, "the sample should hold some refer/decline decisions"
    table = {v.code: name for name, v in deployment.spec.scoring.reason_codes.items()}
    for result in adverse:
        assert 1 <= len(result["reason_codes"]) <= 4
        for reason in result["reason_codes"]:
            assert table[reason["code"]] == reason["feature"] and reason["text"]
    assert all(r["reason_codes"] == [] for r in results if r["decision"] == "approve")


def test_every_decision_is_audited_with_pseudonyms_only(deployment):
    record = deployment.records[3]
    with deployment.client() as client:
        request_id = client.post("/score", json={"application": record}).json()["request_id"]
    store = audit.open_store(deployment.data_dir)
    entries = [e for e in store.entries() if e.kind == "decision"]
    store.close()
    entry = next(e.data for e in entries if e.data["request_id"] == request_id)
    assert entry["caller"] == "loan-origination" and entry["model"]["version"] == "2"
    assert entry["inputs"]["full_name"].startswith("p_") and len(entry["input_hmac"]) == 64
    assert set(entry) >= {"probability_of_default", "decision", "reason_codes", "score"}
    raw = [record[c] for c in ("full_name", "ssn", "email", "address", "date_of_birth")]
    text = b"".join(p.read_bytes() for p in deployment.data_dir.glob("audit/audit.db*"))
    logs = b"".join(p.read_bytes() for p in deployment.data_dir.glob("serving/logs/*.log"))
    metrics = deployment.client(None).get("/metrics").text
    for value in raw:
        assert value.encode() not in text and value.encode() not in logs and value not in metrics
    assert deployment.scorer_token.encode() not in logs


def metric_values(text: str, name: str) -> dict[str, float]:
    """The samples of one metric in a Prometheus text page, by their label text."""
    values = {}
    for line in text.splitlines():
        if line.startswith(name):
            labels, _, number = line[len(name) :].rpartition(" ")
            values[labels] = float(number)
    return values


def test_metrics_count_decisions_and_missing_fields(deployment):
    records = deployment.records[:60]
    with deployment.client(None) as client:
        before = client.get("/metrics").text
    with deployment.client() as client:
        results = client.post("/score_batch", json={"applications": records}).json()["results"]
    with deployment.client(None) as client:
        after = client.get("/metrics").text
    made = {d: sum(r["decision"] == d for r in results) for d in ("approve", "refer", "decline")}
    old, new = (metric_values(t, "lending_decisions_total") for t in (before, after))
    for decision, count in made.items():
        label = f'{{decision="{decision}"}}'
        assert new[label] - old.get(label, 0.0) == count, decision
    missing = sum(r["pull_date"] is None for r in records)
    label = '{field="pull_date"}'
    old, new = (metric_values(t, "lending_missing_fields_total") for t in (before, after))
    assert new.get(label, 0.0) - old.get(label, 0.0) == missing
    served = metric_values(after, "lending_scoring_seconds_count")[""]
    assert served - metric_values(before, "lending_scoring_seconds_count")[""] == 1


def test_audit_verify_passes_then_names_a_tampered_entry(deployment, tmp_path):
    copy = tmp_path / "copy"
    (copy / "audit").mkdir(parents=True)
    with deployment.client() as client:  # at least one decision, checkpointed within 10 s
        assert client.post("/score", json={"application": deployment.records[1]}).is_success
    heads = deployment.data_dir / "audit" / "head_checkpoints.jsonl"
    wait_for(heads.exists, 60, "the service's first head checkpoint")
    source = sqlite3.connect(deployment.data_dir / "audit" / "audit.db")
    target = sqlite3.connect(copy / "audit" / "audit.db")
    source.backup(target)
    source.close()
    shutil.copy(heads, copy / "audit" / heads.name)
    intact = deployment.cli("audit", "verify", "--data-dir", str(copy))
    seq = target.execute(
        f"SELECT min(seq) FROM {audit.TABLE} WHERE kind = 'decision' AND payload LIKE '%approve%'"
    ).fetchone()[0]
    target.execute(f"DROP TRIGGER {audit.TABLE}_no_update")
    target.execute(
        f"UPDATE {audit.TABLE} SET payload = replace(payload, 'approve', 'decline') WHERE seq = ?",
        (seq,),
    )
    target.commit()
    target.close()
    tampered = deployment.cli("audit", "verify", "--data-dir", str(copy))
    assert intact.returncode == 0 and "intact" in intact.stdout, intact.stderr
    assert tampered.returncode == 1 and f"entry {seq} was edited" in tampered.stderr


def test_rollback_switches_the_served_version_after_readiness(deployment):
    assert deployment.served_version() == "2"
    active = read_record(deployment.data_dir)["active"]["slot"]
    idle_port = next(port for name, port in deployment.slots.items() if name != active)
    done = deployment.cli("rollback")
    assert done.returncode == 0, done.stderr
    seen = watch_startup(deployment, idle_port)
    wait_for(lambda: deployment.active_version() == "1", 240, "the rollback deploy")
    assert deployment.served_version() == "1"
    # a starting worker accepts no connection before its model is loaded: nothing half-ready
    assert seen == {("livez", 200), ("readyz", 200)}, seen
    history = tracking.read_history(MlflowTracking().history_path())
    assert history[-1]["event"] == "rollback" and history[-1]["to_version"] == "1"
    assert tracking.alias_version(deployment.config, tracking.CHAMPION) == "1"
    store = audit.open_store(deployment.data_dir)
    rolled = [e.seq for e in store.entries() if e.kind == "rollback"]
    store.close()
    result = audit.verify_store(deployment.data_dir)
    assert rolled and result.ok and result.anchored_to >= rolled[-1], result
    with deployment.client("admin") as client:
        body = {"reason": "v1 confirmed worse", "to_version": "2"}
        again = client.post("/rollback", json=body)
        retried = client.post("/rollback", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["to_version"] == "2" and "risk-ops" in again.json()["by"]
    assert retried.status_code == 200 and retried.json()["noop"] is True
    wait_for(lambda: deployment.active_version() == "2", 60, "the API rollback")
    assert deployment.served_version() == "2"
    assert tracking.alias_version(deployment.config, tracking.PREVIOUS) == "1"


def watch_startup(deployment, port: int) -> set[tuple[str, int]]:
    """Poll a starting slot: the (endpoint, status) pairs it answers until it is ready (a
    connection it does not accept yet answers nothing)."""
    seen: set[tuple[str, int]] = set()
    headers = {"Authorization": f"Bearer {deployment.scorer_token}"}
    application = {"application": deployment.records[0]}
    deadline = time.monotonic() + 240
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                ready = client.get("/readyz").status_code
                seen |= {("livez", client.get("/livez").status_code), ("readyz", ready)}
                if ready == 200:
                    return seen
                score = client.post("/score", json=application, headers=headers)
                seen.add(("score", score.status_code))
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    return seen


def test_no_decision_is_answered_when_the_audit_write_fails(deployment):
    def decisions() -> int:
        store = audit.open_store(deployment.data_dir)
        count = sum(1 for e in store.entries() if e.kind == "decision")
        store.close()
        return count

    before = decisions()
    blocker = sqlite3.connect(deployment.data_dir / "audit" / "audit.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with deployment.client() as client:
            response = client.post("/score", json={"application": deployment.records[5]})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "decision" not in response.json() and "probability_of_default" not in response.text
    assert decisions() == before


PII_SHAPES = [
    ("application/json", lambda v: json.dumps([{"ssn": v, "full_name": v}])),
    ("application/json", lambda v: json.dumps(v)),
    ("application/json", lambda v: json.dumps({"application": v})),
    ("application/json", lambda v: json.dumps({"application": [v]})),
    ("application/json", lambda v: json.dumps({"application": {"ssn": {"nested": v}}})),
    ("application/json", lambda v: json.dumps({"application": {"full_name": 7, "email": [v]}})),
    ("application/json", lambda v: json.dumps({v: {"ssn": v}})),
    ("application/json", lambda v: json.dumps({"applications": {"ssn": v}})),
    ("application/json", lambda v: '{"application": {"ssn": "' + v + '", "ssn": "' + v + '"}}'),
    ("application/json", lambda v: '{"application": {"ssn": "' + v + '", "loan_amount": NaN}}'),
    ("application/json", lambda v: '{"application": {"ssn": "' + v + '"'),
    (
        "multipart/form-data",
        lambda v: f"--b\r\ncontent-disposition: form-data; name=ssn\r\n\r\n{v}",
    ),
    ("multipart/form-data; boundary=b", lambda v: f"--b\r\nname={v}\r\n--b--"),
    ("application/x-www-form-urlencoded", lambda v: f"ssn={v}&full_name={v}"),
    ("text/plain", lambda v: v),
]


def test_no_personal_data_reaches_any_file_the_service_writes(deployment):
    """Bodies of every bad shape, each carrying a marked value, on every route; afterwards no
    file the serving stack wrote holds that value, and its logs are owner-only."""
    marks = [f"Jane Marker-{i:02d} 900-{i:02d}-7311" for i in range(len(PII_SHAPES))]
    with deployment.client("admin") as client:
        for route in ("/score", "/score_batch", "/override", "/rollback"):
            for (content_type, shape), mark in zip(PII_SHAPES, marks, strict=True):
                response = client.post(
                    f"{route}?ssn={mark}",
                    content=shape(mark),
                    headers={"content-type": content_type},
                )
                assert 400 <= response.status_code < 500, (route, content_type, response.text)
                assert mark not in response.text
                assert set(response.json()) == {"error", "detail"}
        bad_path = client.post(f"/score/{marks[0]}", json={"application": marks[0]})
        assert bad_path.status_code == 404
    time.sleep(1.5)  # let the logs flush
    serving = deployment.data_dir / "serving"
    written = [p for p in serving.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in written)
    for path in written:
        content = path.read_bytes()
        for mark in marks:
            assert mark.encode() not in content, path
    for log in serving.glob("logs/*.log"):
        assert stat.S_IMODE(os.stat(log).st_mode) & 0o077 == 0, log


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("loan_amount", "5000", "float_type"),
        ("loan_amount", True, "float_type"),
        ("term_months", True, "literal_error"),
        ("stated_income", "72000", "float_type"),
        ("application_date", "9999-12-31", "date_range"),
        ("application_date", "2019-12-31", "date_range"),  # before the spec's earliest
        ("application_date", "2025-02-30", "date"),
        ("application_date", "20250101", "string_pattern_mismatch"),
        ("application_date", 20250101, "string_type"),
        ("full_name", 12345, "string_type"),
    ],
)
def test_input_types_are_strict(deployment, field, value, rule):
    application = dict(deployment.records[0], **{field: value})
    with deployment.client() as client:
        response = client.post("/score", json={"application": application})
    assert response.status_code == 422, response.text
    assert {(e["field"], e["rule"]) for e in response.json()["detail"]} == {
        (f"application.{field}", rule)
    }
    assert str(value) not in json.dumps(response.json()["detail"])


def test_multipart_without_a_boundary_is_refused_not_a_server_error(deployment):
    with deployment.client() as client:
        for route in ("/score", "/score_batch"):
            response = client.post(
                route, content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
            )
            assert response.status_code == 415, (route, response.text)


def test_the_openapi_document_describes_the_application_and_every_error(deployment):
    with deployment.client(None) as client:
        document = client.get("/docs.json").json()
    application = document["components"]["schemas"]["Application"]
    spec = deployment.spec
    primary = spec.primary_source
    assert set(application["required"]) == set(primary.columns)
    assert application["additionalProperties"] is False
    loan = application["properties"]["loan_amount"]
    assert loan["type"] == "number"
    assert loan["minimum"] == primary.columns["loan_amount"].min
    assert loan["maximum"] == primary.columns["loan_amount"].max
    purpose = application["properties"]["purpose"]
    assert purpose["enum"] == primary.columns["purpose"].allowed
    assert application["properties"]["application_date"]["format"] == "date"
    score = document["paths"]["/score"]["post"]
    body = score["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["application"] == {"$ref": "#/components/schemas/Application"}
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(score["responses"])
    assert "403" in document["paths"]["/override"]["post"]["responses"]


def test_every_error_has_the_documented_shape(deployment):
    import jsonschema

    with deployment.client(None) as client:
        error_schema = client.get("/docs.json").json()["components"]["schemas"]["Error"]
    application = dict(deployment.records[0], loan_amount="many")
    calls = [
        (None, "/score", {"json": {"application": application}}),  # 401
        ("scorer", "/override", {"json": {"override": {}}}),  # 403
        ("scorer", "/score", {"content": b"[1]", "headers": {"content-type": "text/plain"}}),
        ("scorer", "/score", {"content": b"{", "headers": {"content-type": "application/json"}}),
        ("scorer", "/score", {"json": {"application": application}}),  # 422 (service)
        ("scorer", "/score_batch", {"json": {"applications": []}}),  # 422 (service)
        ("scorer", "/nowhere", {"json": {}}),  # 404
    ]
    statuses = []
    for token, route, request in calls:
        with deployment.client(token) as client:
            response = client.post(route, **request)
        statuses.append(response.status_code)
        jsonschema.validate(response.json(), error_schema)
    assert statuses == [401, 403, 415, 400, 422, 422, 404]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_published_openapi_holds_under_generated_requests(deployment, mode):
    """Schemathesis against the published document with the scorer token, on every operation:
    no 5xx, every status documented, every body in its documented shape; requests that break
    the document (negative mode) are refused with a 4xx."""
    import schemathesis
    from hypothesis import given
    from schemathesis import GenerationMode

    checks = schemathesis.checks
    chosen = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
    ]
    if mode == "negative":
        chosen.append(checks.negative_data_rejection)
    schema = schemathesis.openapi.from_url(f"{deployment.url}/docs.json")
    headers = {"Authorization": f"Bearer {deployment.scorer_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9
    for operation in operations:
        if mode == "negative" and operation.method.upper() == "GET":
            continue  # nothing to break: no parameters, no body

        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case):
            case.call_and_validate(headers=headers, checks=chosen)

        call()
