"""The challenger scored in the champion's shadow, on a real served Bento."""

import json
import re

import httpx
import numpy as np
import pytest

from lending_pipeline.ml import audit, tracking
from lending_pipeline.ml.train import predict
from lending_pipeline.serving.deploy import read_record
from lending_pipeline_tests.serving.conftest import deploy, wait_for


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    yield from deploy(tmp_path_factory.mktemp("shadow"))


def shadow_counter(deployment) -> float:
    text = httpx.get(f"{deployment.url}/metrics", timeout=30).text
    found = re.search(r'^lending_shadow_total\{outcome="scored"\} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def entries_of(deployment, kind: str) -> list[audit.Entry]:
    store = audit.open_store(deployment.data_dir)
    try:
        return [e for e in store.entries() if e.kind == kind]
    finally:
        store.close()


def test_the_challenger_scores_every_answered_application_unanswered(deployment):
    set_ = deployment.cli("challenger", "set", "1", "--reason", "compare on live traffic")
    assert set_.returncode == 0, set_.stderr
    assert tracking.alias_version(deployment.config, tracking.CHALLENGER) == "1"
    wait_for(
        lambda: (
            "-c1-" in (read_record(deployment.data_dir).get("active") or {}).get("bento_tag", "")
        ),
        240,
        "the champion's Bento with its challenger",
    )
    records = deployment.records[:40]
    before = shadow_counter(deployment)
    with deployment.client() as client:
        answers = [client.post("/score", json={"application": r}) for r in records[:10]]
        batch = client.post("/score_batch", json={"applications": records[10:]})
    assert all(a.status_code == 200 for a in answers) and batch.status_code == 200
    ids = [a.json()["request_id"] for a in answers]
    ids += [r["request_id"] for r in batch.json()["results"]]
    assert all(a.json()["model"]["version"] == "2" for a in answers)  # the answer: the champion
    assert "challenger" not in json.dumps(answers[0].json())

    wait_for(lambda: len(entries_of(deployment, "shadow")) >= len(ids), 120, "shadow entries")
    shadow = {e.data["request_id"]: e.data for e in entries_of(deployment, "shadow")}
    served = {e.data["request_id"]: e.data for e in entries_of(deployment, "decision")}
    assert set(ids) <= set(shadow)
    expected = predict(
        deployment.spec, deployment.versions["1"].model, deployment.features.iloc[:40]
    )
    got = np.array([shadow[i]["probability_of_default"] for i in ids])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert all(shadow[i]["model"]["version"] == "1" for i in ids)
    assert all(shadow[i]["champion_decision"] == served[i]["decision"] for i in ids)
    assert shadow_counter(deployment) - before == len(ids)

    shown = deployment.cli("audit", "decision", ids[0])
    assert shown.returncode == 0, shown.stderr
    assert '"shadow"' in shown.stdout and '"version": "1"' in shown.stdout
    heads = audit.checkpoints_path(deployment.data_dir)  # written every 10 s by the service
    wait_for(lambda: heads.is_file() and heads.stat().st_size > 0, 120, "a head checkpoint")
    verified = deployment.cli("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    changes = [e.data for e in entries_of(deployment, "challenger")]
    assert changes[-1]["event"] == "challenger_set" and changes[-1]["version"] == "1"


def test_a_challenger_change_is_refused_without_a_reason_or_for_the_champion(deployment):
    champion = tracking.alias_version(deployment.config, tracking.CHAMPION)
    itself = deployment.cli("challenger", "set", champion, "--reason", "x")
    unknown = deployment.cli("challenger", "set", "99", "--reason", "x")
    silent = deployment.cli("challenger", "clear")
    assert itself.returncode == 1 and "is the champion" in itself.stderr
    assert unknown.returncode == 1 and "not in the registry" in unknown.stderr
    assert silent.returncode == 1 and "--reason" in silent.stderr


def test_clearing_the_challenger_stops_shadow_scoring(deployment):
    cleared = deployment.cli("challenger", "clear", "--reason", "comparison over")
    assert cleared.returncode == 0, cleared.stderr
    assert tracking.alias_version(deployment.config, tracking.CHALLENGER) is None
    wait_for(
        lambda: not re.search(r"-c\d+-", read_record(deployment.data_dir)["active"]["bento_tag"]),
        240,
        "the champion's Bento without a challenger",
    )
    before = len(entries_of(deployment, "shadow"))
    with deployment.client() as client:
        assert client.post("/score", json={"application": deployment.records[0]}).status_code == 200
    assert len(entries_of(deployment, "shadow")) == before
