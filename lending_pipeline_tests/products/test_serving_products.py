"""Two products behind one router: each answered by its own stack, model and callers; one
product's stack killed leaves the other answering."""

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from lending_pipeline.defs.resources import MlflowTracking
from lending_pipeline.ml import tracking
from lending_pipeline.ml.features import build_features
from lending_pipeline.ml.scoring import records_from_tables
from lending_pipeline.ml.train import labelled, out_of_time_split
from lending_pipeline.products import load_products
from lending_pipeline.serving.operations import deploy_version
from lending_pipeline.spec import load_spec
from lending_pipeline_tests.conftest import AUDIT_ENV, AUDIT_KEY, PII_KEY
from lending_pipeline_tests.ml.test_scoring import typed_tables
from lending_pipeline_tests.ports import free_port
from lending_pipeline_tests.products.conftest import NAMES
from lending_pipeline_tests.serving.conftest import register, wait_for


def free_block(size: int = 30) -> int:
    """The first of `size` consecutive free loopback ports."""
    for _ in range(50):
        first = free_port()
        if first + size < 65000 and all(_free(first + i) for i in range(size)):
            return first
    raise AssertionError("no block of free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cli(env, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lending_pipeline.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def served(products_file, tmp_path, monkeypatch):
    for key in ("LENDING_API_TOKENS", "LENDING_API_TOKENS_FILE", *AUDIT_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LENDING_PII_KEY", PII_KEY)
    monkeypatch.setenv("LENDING_AUDIT_KEY", AUDIT_KEY)
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "true")
    env = dict(os.environ)
    products = load_products()
    deployed = {}
    for seed, name in enumerate(NAMES):
        product = products.get(name)
        spec = load_spec(product.spec_path)
        config = MlflowTracking().config(name)
        tables = typed_tables(spec, seed=40 + seed)
        features = build_features(spec, tables).features
        frame = labelled(spec, features, tables["outcomes"], dt.date(2025, 6, 1))
        version, _ = register(spec, config, out_of_time_split(frame, "application_date", 8, 8))
        tracking.promote(config, version)
        deploy_version(spec, config, version, product.data_dir, "test deploy")
        made = cli(env, "--product", name, "token", "--caller", f"{name}-origination")
        assert made.returncode == 0, made.stderr
        deployed[name] = {
            "token": made.stdout.strip(),
            "version": version,
            "record": records_from_tables(spec, tables)[0],
            "data_dir": product.data_dir,
        }
    port, first = free_port(), free_block()
    log = tmp_path / "router.out"
    with log.open("wb") as handle:
        router = subprocess.Popen(
            [sys.executable, "-m", "lending_pipeline.cli", "serve-products",
             "--port", str(port), "--first-port", str(first)],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for name in NAMES:
            wait_for(lambda n=name: _ready(url, n), 300, f"product {name} behind the router")
        yield url, deployed
    finally:
        os.killpg(router.pid, signal.SIGTERM)
        try:
            router.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(router.pid, signal.SIGKILL)


def _ready(url: str, name: str) -> bool:
    try:
        return httpx.get(f"{url}/products/{name}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def score(url, name, token, record) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"application": record}
    return httpx.post(f"{url}/products/{name}/score", json=body, headers=headers, timeout=30)


def test_each_product_answers_with_its_own_model_callers_and_audit_log(served):
    url, deployed = served
    first, second = NAMES
    assert httpx.get(f"{url}/products", timeout=10).json() == {"products": sorted(NAMES)}
    unknown = httpx.get(f"{url}/products/nope/score", timeout=10)
    assert unknown.status_code == 404 and "no such product" in unknown.json()["error"]
    for name in NAMES:
        mine = deployed[name]
        answer = score(url, name, mine["token"], mine["record"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["version"] == mine["version"]
        other = deployed[second if name == first else first]
        refused = score(url, name, other["token"], mine["record"])
        assert refused.status_code == 401  # a caller of one product is a stranger to the other

    pid_file = deployed[second]["data_dir"] / "serving" / "run" / "supervisord.pid"
    os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
    statuses = {name: [] for name in NAMES}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(statuses[first]) < 40:
        for name in NAMES:
            mine = deployed[name]
            statuses[name].append(score(url, name, mine["token"], mine["record"]).status_code)
        if statuses[second][-3:] == [503, 503, 503]:
            break
    assert statuses[second][-1] == 503  # its stack is gone: the router says so
    assert set(statuses[first]) == {200}  # the other product never noticed

    env = {**os.environ}
    heads = deployed[first]["data_dir"] / "audit" / "head_checkpoints.jsonl"  # every 10 s
    answered_at = time.time()
    wait_for(
        lambda: heads.exists() and heads.stat().st_mtime > answered_at, 90, "a head checkpoint"
    )
    verified = cli(env, "--product", first, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # the killed stack wrote no head checkpoint after its last entries: its MAC chain verifies
    killed = cli(env, "--product", second, "audit", "verify", "--no-checkpoints")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert deployed[first]["data_dir"] != deployed[second]["data_dir"]
