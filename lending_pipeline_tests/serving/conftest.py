"""A real scoring deployment for the serving tests: two registered model versions, their Bentos,
and `lending-pipeline serve` (router + blue/green `bentoml serve` processes) on free ports."""

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lending_pipeline.ml import tracking
from lending_pipeline.ml.features import build_features
from lending_pipeline.ml.scoring import REFERENCE_ARTIFACT, records_from_tables, reference_values
from lending_pipeline.ml.train import SPLIT, fit_candidate, inputs, labelled, out_of_time_split
from lending_pipeline.serving.auth import new_token
from lending_pipeline.serving.deploy import read_record
from lending_pipeline.serving.operations import deploy_version
from lending_pipeline.spec import load_spec
from lending_pipeline_tests.conftest import AUDIT_ENV, AUDIT_KEY, PII_KEY
from lending_pipeline_tests.ml.test_scoring import typed_tables
from lending_pipeline_tests.ports import free_port


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Answer:
    sent: float  # time.monotonic() when the request was sent
    status: int | str  # HTTP status, or the name of the transport error
    version: str | None = None
    request_id: str | None = None
    client_port: int | None = None
    error: str | None = None  # the answer's error message (what the service or the proxy said)


class Load:
    """A bounded loop of /score requests on one kept-alive connection, in a thread: every
    answer with its time, status, model version, request id and the client's port."""

    def __init__(self, deployment, limit: int = 20_000, seconds: float = 900, pause=0.005):
        self.deployment, self.limit, self.seconds, self.pause = deployment, limit, seconds, pause
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        headers = {"Authorization": f"Bearer {self.deployment.scorer_token}"}
        records = self.deployment.records
        with httpx.Client(
            base_url=self.deployment.url, headers=headers, timeout=30, limits=limits
        ) as client:
            for i in range(self.limit):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                sent = time.monotonic()
                try:
                    response = client.post("/score", json={"application": records[i % 200]})
                except httpx.HTTPError as exc:
                    self.answers.append(Answer(sent, type(exc).__name__))
                else:
                    port = _client_port(response)
                    body = _json(response)
                    self.answers.append(
                        Answer(
                            sent,
                            response.status_code,
                            body.get("model", {}).get("version"),
                            body.get("request_id"),
                            port,
                            None if response.status_code == 200 else str(body.get("error")),
                        )
                    )
                time.sleep(self.pause)

    def wait_answers(self, count: int, timeout: float = 120) -> None:
        start = len(self.answers)
        wait_for(lambda: len(self.answers) >= start + count, timeout, f"{count} answers")

    def wait_recovered(self, moment: float, streak: int = 20, timeout: float = 180) -> float:
        """Seconds from `moment` to the first answer of a run of `streak` successes sent after
        it, with no failure after that run began (the outage clients saw)."""

        def resumed():
            run = 0
            for answer in self.answers:
                if answer.sent <= moment:
                    continue
                run = run + 1 if answer.status == 200 else 0
                if run == 1:
                    start = answer.sent
                if run >= streak:
                    return start
            return 0

        return wait_for(resumed, timeout, "service to resume") - moment


def _json(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _client_port(response: httpx.Response) -> int | None:
    """The local port of the connection that carried a response (None once it is closed)."""
    stream = response.extensions.get("network_stream")
    try:
        return stream.get_extra_info("client_addr")[1] if stream else None
    except OSError:
        return None


@dataclass
class Deployment:
    url: str
    slots: dict[str, int]
    data_dir: Path
    env: dict[str, str]
    spec: object
    config: tracking.TrackingConfig
    versions: dict[str, object]
    records: list[dict]
    features: object
    scorer_token: str
    admin_token: str
    log: Path

    def client(self, token: str | None = "scorer") -> httpx.Client:
        value = {"scorer": self.scorer_token, "admin": self.admin_token}.get(token, token)
        headers = {"Authorization": f"Bearer {value}"} if value else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def served_version(self) -> str:
        with self.client() as client:
            response = client.post("/score", json={"application": self.records[0]})
        return response.json()["model"]["version"]

    def active_version(self) -> str | None:
        active = read_record(self.data_dir).get("active")
        return active["model_version"] if active else None

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "lending_pipeline.cli", *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=600)

    def logs(self, lines: int = 30) -> str:
        """The last lines of the deployer's and the process manager's logs (for a failure)."""
        folder = self.data_dir / "serving" / "logs"
        parts = []
        for name in ("deployer.log", "supervisord.log"):
            path = folder / name
            tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(parts)


def register(spec, config, split, **params):
    """Fit, log and register one model version the way `candidate_model` does, then judge it
    against the spec's gates on the split's test rows (re-scored from the registry) and record
    its gate record, as `model_evaluation` does: packaging refuses a version without one. It is
    judged without a champion (the serving tests register versions from different data)."""
    import mlflow

    from lending_pipeline.ml.gating import judge_version

    run_spec = spec.model_copy(update={"model": spec.model.model_copy(update=params)})
    trained = fit_candidate(run_spec, split)
    with tracking.start_run(config, "serving-test", {"code_version": "test"}):
        mlflow.log_params({"model_type": trained.kind, "cutoff": trained.cutoff})
        mlflow.log_dict(reference_values(spec, split[split[SPLIT] == "train"]), REFERENCE_ARTIFACT)
        example = inputs(spec, split[split[SPLIT] == "validation"].head(20))
        version, _ = tracking.log_model(config, trained.model, example, {})
    gates, differences, _ = judge_version(spec, config, version, split, trained.cutoff, "test")
    failed = [g.describe() for g in gates if not g.passed]
    assert not failed and not differences, (failed, differences)
    return version, trained


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    yield from deploy(tmp_path_factory.mktemp("serving"))


def deploy(root: Path, audit_url: str | None = None):
    """Two registered versions, the second deployed, `lending-pipeline serve` running on free
    ports (audit log in SQLite under the data dir, or at `audit_url`); yields the Deployment and
    stops the stack afterwards."""
    data_dir = root / "data"
    scorer_token, scorer_line = new_token("loan-origination", "scorer")
    admin_token, admin_line = new_token("risk-ops", "admin")
    env = {
        **os.environ,
        "LENDING_DATA_DIR": str(data_dir),
        "LENDING_PII_KEY": PII_KEY,
        "LENDING_AUDIT_KEY": AUDIT_KEY,
        "LENDING_API_TOKENS": f"{scorer_line};{admin_line}",
        "BENTOML_DO_NOT_TRACK": "true",
    }
    unset = ("MLFLOW_TRACKING_URI", "LENDING_API_TOKENS_FILE", *AUDIT_ENV)
    for key in unset:
        env.pop(key, None)
    if audit_url:
        env["LENDING_AUDIT_URL"] = audit_url
    patch = pytest.MonkeyPatch()
    for key in ("LENDING_DATA_DIR", "LENDING_PII_KEY", "LENDING_AUDIT_KEY", "LENDING_API_TOKENS"):
        patch.setenv(key, env[key])
    for key in unset:
        patch.delenv(key, raising=False)
    if audit_url:
        patch.setenv("LENDING_AUDIT_URL", audit_url)

    from lending_pipeline.defs.resources import MlflowTracking

    spec = load_spec()
    config = MlflowTracking().config(spec.name)
    tables = typed_tables(spec)
    features = build_features(spec, tables).features
    frame = labelled(spec, features, tables["outcomes"], dt.date(2025, 6, 1))
    split = out_of_time_split(frame, "application_date", 8, 8)
    first, first_model = register(spec, config, split)
    second, second_model = register(spec, config, split, seed=11, params={"max_iter": 60})
    tracking.promote(config, first)
    tracking.promote(config, second)
    deploy_version(spec, config, second, data_dir, "test deploy")

    port, blue, green = free_port(), free_port(), free_port()
    log = root / "serve.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lending_pipeline.cli",
                "serve",
                "--port",
                str(port),
                "--slot-ports",
                str(blue),
                str(green),
            ],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deployed = Deployment(
        url=f"http://127.0.0.1:{port}",
        slots={"blue": blue, "green": green},
        data_dir=data_dir,
        env=env,
        spec=spec,
        config=config,
        versions={first: first_model, second: second_model},
        records=records_from_tables(spec, tables),
        features=features,
        scorer_token=scorer_token,
        admin_token=admin_token,
        log=log,
    )
    try:
        wait_for(lambda: deployed.active_version() == second, 240, "the first deploy")
        yield deployed
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        patch.undo()
