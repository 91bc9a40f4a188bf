"""Drift monitoring on a real instance and MLflow store: drift_report and its checks, the drift
sensor (cursor, run keys, cooldown, tags), alerts, schedules, and drift -> retrain -> gate."""

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
import pytest
import yaml

from lending_pipeline.definitions import MONITORING_JOB, TRAINING_JOB, build_definitions
from lending_pipeline.defs.automation import (
    CHECK_FAILURE_SENSOR,
    DRIFT_SENSOR,
    RETRAINING_SCHEDULE,
    build_drift_sensor,
)
from lending_pipeline.defs.common import FEATURES, validated_key
from lending_pipeline.defs.monitoring import DRIFT_REPORT, MISSING_FIELDS, PERFORMANCE
from lending_pipeline.defs.resources import MlflowTracking, read_partitions
from lending_pipeline.defs.served_fairness import SERVED_AIR, SERVED_FAIRNESS
from lending_pipeline.docs_server import DocsSite
from lending_pipeline.links import EVIDENTLY_PORT_ENV, docs_port, evidently_port
from lending_pipeline.ml import audit, tracking
from lending_pipeline.ml.alerts import WEBHOOK_ENV, alerts_path
from lending_pipeline.ml.dashboard import project_id, workspace_dir
from lending_pipeline.ml.decision import decide_many
from lending_pipeline.ml.monitoring import load_champion
from lending_pipeline.ml.scoring import records_from_tables
from lending_pipeline.ml.synth import generate_consumer_loans, partition_path
from lending_pipeline.ml.train import inputs
from lending_pipeline.runs import (
    QUIET,
    launch_requested,
    run_monitoring,
    run_partition,
    run_training,
    tick_sensor,
)
from lending_pipeline.spec import default_spec_path, load_spec
from lending_pipeline_tests.conftest import PII_KEY
from lending_pipeline_tests.ports import free_port
from lending_pipeline_tests.ui import BROWSER_ARGS, evidently_ui

ROOT = Path(__file__).resolve().parents[2]
START = dt.date(2025, 2, 3)
PER_DAY = 500
NORMAL_DAYS = 9  # days 0..8; the champion trains on days 0..6 (maturity 2 days, as of day 8)
TRAINED = 7
UNDRIFTED = 8  # its cohorts mature after day 10
SPIKE = (9, 10)  # utilization_spike; day 10 judges realised performance on days 7..8
MISSING_DAY = 11  # missing_bureau_fields


def day(offset: int) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


def monitoring_spec(path, **drift):
    data = yaml.safe_load(default_spec_path().read_text())
    data["target"]["maturity_days"] = 2
    data["model"]["split"] = {"validation_days": 2, "test_days": 2}
    data["model"]["params"]["max_iter"] = 80
    small_groups = {"min_auc_margin_over_baseline": -0.1, "max_ece": 0.1}
    data["gates"].update({**small_groups, "min_adverse_impact_ratio": 0.5})
    data["drift"].update({"min_rows": 200, "report_sample_rows": 1000, **drift})
    for source in data["sources"]:  # validation tolerates the blanks: drift monitoring sees them
        for rule in source.get("expectations", []):
            if rule["expectation"] == "expect_column_values_to_not_be_null":
                rule["mostly"] = 0.6
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def train_config(as_of: str) -> dict:
    return {"ops": {n: {"config": {"as_of": as_of}} for n in ("training_set", "candidate_model")}}


def checks(result, asset=DRIFT_REPORT) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == asset}


def report_metadata(result, asset=DRIFT_REPORT) -> dict:
    event = next(e for e in result.all_events if e.is_step_materialization and e.asset_key == asset)
    return event.event_specific_data.materialization.metadata


def log_decisions(
    spec, data_dir, features_day: str, logged_on: str, champion, approve_all: bool = True
) -> int:
    """Audit decision entries, as the scoring service writes them, dated `logged_on`: every one
    an approval, or the decision rule's with reason codes for refer and decline."""
    tables = {
        s.name: read_partitions(data_dir, validated_key(s.name), [features_day])
        for s in spec.feature_sources
    }
    records = records_from_tables(spec, tables)
    features = read_partitions(data_dir, FEATURES, [features_day])
    prob = champion.model.predict_proba(inputs(spec, features))[:, 1]
    decisions = ["approve"] * len(prob)
    if not approve_all:
        decisions = decide_many(prob, champion.cutoff, spec.scoring.decline_above_pd)
    codes = [reason.code for reason in spec.scoring.reason_codes.values()]
    store = audit.open_store(data_dir)
    with pytest.MonkeyPatch.context() as clock:
        clock.setattr(audit, "now", lambda: f"{logged_on}T10:00:00.000000+00:00")
        store.append(
            "decision",
            [
                {
                    "request_id": f"r{i}",
                    "caller": "test",
                    "model": {"name": "m", "version": champion.version},
                    "inputs": record,
                    "probability_of_default": float(p),
                    "score": 600,
                    "decision": decision,
                    "reason_codes": [] if decision == "approve" else [codes[i % 3], codes[4]],
                }
                for i, (record, p, decision) in enumerate(
                    zip(records, prob, decisions, strict=True)
                )
            ],
        )
    store.close()
    return len(records)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """12 days materialized, a champion trained on days 0..6, drift reports of days 7..11
    (the Evidently report only for the first drifted day: it takes seconds a column)."""
    root = tmp_path_factory.mktemp("monitoring")
    data = root / "data"
    spec = monitoring_spec(root / "spec.yaml")
    future = dt.date(2025, 9, 1)
    generate_consumer_loans(
        spec,
        data,
        START,
        NORMAL_DAYS + len(SPIKE),
        PER_DAY,
        seed=21,
        scenario="utilization_spike",
        scenario_start=START + dt.timedelta(days=NORMAL_DAYS),
        as_of=future,
    )
    missing = START + dt.timedelta(days=MISSING_DAY)
    generate_consumer_loans(
        spec, data, missing, 1, PER_DAY, 22, "missing_bureau_fields", missing, future
    )
    patch = pytest.MonkeyPatch()
    patch.setenv("LENDING_DATA_DIR", str(data))
    patch.setenv("LENDING_PII_KEY", PII_KEY)
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    patch.delenv(WEBHOOK_ENV, raising=False)
    patch.delenv(audit.AUDIT_URL_ENV, raising=False)
    patch.setenv(EVIDENTLY_PORT_ENV, str(free_port()))  # the drift dashboard's links
    (root / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        defs = build_definitions(spec)
        for offset in range(MISSING_DAY + 1):
            run = run_partition(defs, instance, day(offset))
            assert run.success, run.messages
        before_champion = run_monitoring(defs, instance, day(TRAINED), evidently=False)
        training = run_training(defs, instance, train_config(day(UNDRIFTED)))
        assert training.success, [e.description for e in training.get_asset_check_evaluations()]
        config = MlflowTracking().config(spec.name)
        champion = load_champion(config)
        decisions = log_decisions(spec, data, day(SPIKE[1]), day(UNDRIFTED), champion)
        log_decisions(spec, data, day(MISSING_DAY), day(MISSING_DAY), champion, False)
        reports = {
            offset: run_monitoring(defs, instance, day(offset), evidently=offset == SPIKE[0])
            for offset in (UNDRIFTED, *SPIKE, MISSING_DAY)
        }
        yield {
            "spec": spec,
            "spec_path": root / "spec.yaml",
            "home": root / "home",
            "data": data,
            "instance": instance,
            "defs": defs,
            "config": config,
            "champion": champion,
            "before_champion": before_champion,
            "decisions": decisions,
            "reports": reports,
            "evidently_port": evidently_port(),
        }
    patch.undo()


def test_champion_reference_is_its_training_range(monitored):
    champion = monitored["champion"]
    assert champion.version == "1"
    assert champion.training_days == [day(i) for i in range(TRAINED)]


def test_without_a_champion_nothing_is_judged(monitored):
    result = monitored["before_champion"]
    assert result.success
    metadata = report_metadata(result)
    assert metadata["worst_tier"].value == "not_judged"
    assert "no champion yet" in metadata["note"].value
    evaluations = checks(result)
    assert len(evaluations) == 3
    assert all(e.passed and e.metadata["judged"].value is False for e in evaluations.values())


def test_undrifted_day_is_within_limits(monitored):
    result = monitored["reports"][UNDRIFTED]
    assert result.success
    metadata = report_metadata(result)
    assert metadata["worst_tier"].value == "ok", metadata["features"].value
    assert metadata["drifted_features"].value == {}
    assert metadata["reference_days"].value == f"{day(0)}..{day(TRAINED - 1)}"
    stored = read_partitions(monitored["data"], FEATURES, [day(i) for i in range(UNDRIFTED + 1)])
    assert metadata["rows_current"].value == (stored["application_date"] == day(UNDRIFTED)).sum()
    assert metadata["rows_reference"].value == (stored["application_date"] < day(TRAINED)).sum()
    assert "switched off" in metadata["evidently_report"].value
    assert {c: e.passed for c, e in checks(result).items()} == {
        "drift_report_within_limits": True,
        "drift_report_missing_fields": True,
        "drift_report_realised_performance": True,
    }
    performance = checks(result)[PERFORMANCE.name]
    assert "not judged yet" in performance.description  # no later cohort has matured


def test_monitoring_job_reports_the_fairness_of_served_decisions(monitored):
    served = monitored["reports"][UNDRIFTED]
    metadata = report_metadata(served, SERVED_FAIRNESS)
    assert metadata["decisions"].value == monitored["decisions"]
    assert metadata["approval_rate"].value == 1.0  # every logged decision was an approval
    evaluation = checks(served, SERVED_FAIRNESS)[SERVED_AIR.name]
    assert evaluation.passed and evaluation.metadata["measurable"].value is True
    quiet = checks(monitored["reports"][SPIKE[0]], SERVED_FAIRNESS)[SERVED_AIR.name]
    assert quiet.passed and "no decisions were served" in quiet.description


def test_served_inputs_are_reported_separately(monitored):
    metadata = report_metadata(monitored["reports"][UNDRIFTED])
    assert metadata["served_decisions"].value == monitored["decisions"] > 0
    assert metadata["served_worst_tier"].value == "retrain"  # they were a drifted day's
    assert "utilization" in metadata["served_drifted_features"].value
    assert metadata["worst_tier"].value == "ok"


def test_drifted_day_reaches_the_retrain_tier(monitored):
    result = monitored["reports"][SPIKE[0]]
    assert result.success  # monitoring checks do not block or fail the run
    metadata = report_metadata(result)
    assert metadata["worst_tier"].value == "retrain"
    assert metadata["worst_feature"].value == "utilization"
    assert metadata["worst_psi"].value >= 0.25
    features = {r.data["feature"]: r.data for r in metadata["features"].value.records}
    assert features["utilization"]["kind"] == "numeric"
    assert features["utilization"]["psi"] == metadata["worst_psi"].value
    schema = {c.name: c.type for c in metadata["features"].value.schema.columns}
    assert schema["psi"] == schema["missing_current"] == "float"
    assert metadata["psi_chart"].value.startswith("![PSI per feature")
    evaluation = checks(result)["drift_report_within_limits"]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.partition == day(SPIKE[0])
    assert evaluation.metadata["runbook"].value.endswith("#drift_report_within_limits")
    assert "utilization" in evaluation.metadata["drifted_features"].value


def test_reports_are_saved_and_logged_to_mlflow(monitored):
    from mlflow import MlflowClient

    data, config = monitored["data"], monitored["config"]
    first = day(SPIKE[0])
    metadata = report_metadata(monitored["reports"][SPIKE[0]])
    html = data / "reports" / "drift" / f"{first}.html"
    assert html.stat().st_size > 10_000
    link = metadata["evidently_report"].value
    assert link == f"http://127.0.0.1:{docs_port()}/reports/drift/{first}.html"
    assert DocsSite(data).resolve(urlsplit(link).path) == html.resolve()
    client = MlflowClient(tracking_uri=config.tracking_uri)
    run = client.get_run(metadata["mlflow_run_id"].value)
    assert run.data.tags["partition"] == first
    assert run.data.tags["worst_tier"] == "retrain"
    assert run.data.metrics["psi.utilization"] >= 0.25
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "drift")}
    assert {f"drift/{first}.html", f"drift/{first}_psi.png", "drift/summary.json"} <= artifacts


DASHBOARD_PANELS = (
    "PSI per feature",
    "Missing rate of nullable fields",
    "Income and utilization shift",
    "Score distribution",
    "Approval rate of served decisions",
    "Most frequent decline reasons",
)
DASHBOARD_DAYS = (UNDRIFTED, *SPIKE, MISSING_DAY)  # the days judged against a champion


def dashboard_runs(monitored) -> tuple[str, dict]:
    """The spec's project id and its snapshots by day, from the Evidently workspace."""
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(workspace_dir(monitored["data"])))
    project = project_id(monitored["spec"].name)
    runs = {}
    for snapshot_id in workspace.list_runs(project):
        snapshot = workspace.get_run(project, snapshot_id)
        values = {}
        for result in snapshot.metric_results.values():
            params = result.metric_value_location.metric.params
            kind = params["type"].rsplit(":", 1)[1]
            key = params.get("column") or params.get("decision") or params.get("tier")
            values[(kind, key)] = result
        runs[snapshot.metadata["day"]] = (str(snapshot_id), snapshot, values)
    return str(project), runs


def test_drift_reports_fill_the_dashboard_a_snapshot_per_day(monitored):
    project, runs = dashboard_runs(monitored)
    assert sorted(runs) == [day(offset) for offset in DASHBOARD_DAYS]
    metadata = report_metadata(monitored["reports"][SPIKE[0]])
    snapshot_id, snapshot, values = runs[day(SPIKE[0])]
    port = monitored["evidently_port"]
    assert metadata["drift_dashboard"].value == (
        f"http://127.0.0.1:{port}/projects/{project}/reports/{snapshot_id}"
    )
    assert snapshot.timestamp == dt.datetime.fromisoformat(day(SPIKE[0]))
    failed = checks(monitored["reports"][SPIKE[0]])["drift_report_within_limits"]
    assert failed.metadata["drift_dashboard"].value == metadata["drift_dashboard"].value
    psi = values[("QuantilePSI", "utilization")].value
    assert psi == pytest.approx(metadata["psi.utilization"].value, abs=1e-4) and psi >= 0.25
    assert values[("PSITier", "retrain")].value == monitored["spec"].drift.psi_retrain
    assert ("DecisionShare", "approve") not in values  # no decision was served that day
    served = runs[day(UNDRIFTED)][2]
    assert served[("DecisionShare", "approve")].value == 1.0  # the logged approvals
    declines = runs[day(MISSING_DAY)][2]
    assert declines[("DecisionShare", "decline")].value > 0
    assert declines[("DeclineReasons", None)].values  # the declines' reason codes
    missing = declines[("MissingValueCount", "inquiries_6m")].share.value
    assert missing > runs[day(UNDRIFTED)][2][("MissingValueCount", "inquiries_6m")].share.value


def test_drift_dashboard_shows_the_panels_with_data(monitored, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    project, runs = dashboard_runs(monitored)
    link = report_metadata(monitored["reports"][SPIKE[0]])["drift_dashboard"].value
    workspace = workspace_dir(monitored["data"])
    shots = Path(os.environ.get("LENDING_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with evidently_ui(workspace, monitored["evidently_port"]) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(link)  # the drift_report's link: the day's snapshot
        expect(page.get_by_text(runs[day(SPIKE[0])][0]).first).to_be_visible()
        expect(page.get_by_text("PSI of utilization", exact=True)).to_be_visible()

        page.goto(f"{base}/projects/{project}")
        for title in DASHBOARD_PANELS:
            card = page.locator(".MuiCard-root").filter(has=page.get_by_text(title, exact=True))
            expect(card).to_have_count(1)
            expect(card.locator("svg").first).to_be_visible()
            points = card.locator(".MuiMarkElement-root, .MuiBarElement-root")  # data, not axes
            expect(points.first).to_be_visible()
        psi = page.locator(".MuiCard-root").filter(has=page.get_by_text("PSI per feature"))
        for offset in DASHBOARD_DAYS:
            expect(psi.get_by_text(f"{day(offset)} 00:00:00").first).to_be_visible()
        for legend in ("utilization", "warn tier (0.1)", "retrain tier (0.25)", "score"):
            expect(psi.get_by_text(legend, exact=True).first).to_be_visible()
        reasons = page.locator(".MuiCard-root").filter(
            has=page.get_by_text("Most frequent decline reasons")
        )
        codes = runs[day(MISSING_DAY)][2][("DeclineReasons", None)].values
        for code in codes:
            expect(reasons.get_by_text(code, exact=True).first).to_be_visible()
        page.screenshot(path=shots / "drift_dashboard.png", full_page=True)
        browser.close()
    assert (shots / "drift_dashboard.png").stat().st_size > 10_000


def test_missing_field_spike_fails_its_check(monitored):
    result = monitored["reports"][MISSING_DAY]
    evaluation = checks(result)[MISSING_FIELDS.name]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "inquiries_6m" in evaluation.metadata["fields"].value
    spikes = [r.data for r in evaluation.metadata["spikes"].value.records]
    assert "inquiries_6m" in {row["feature"] for row in spikes}, spikes


def test_realised_performance_judged_on_matured_cohorts(monitored):
    evaluation = checks(monitored["reports"][SPIKE[1]])[PERFORMANCE.name]
    metadata = evaluation.metadata
    assert metadata["judged"].value is True
    assert metadata["cohort_days"].value == f"{day(TRAINED)}..{day(UNDRIFTED)}"
    assert metadata["matured_rows"].value > PER_DAY
    assert 0.6 < metadata["roc_auc"].value <= 1
    assert evaluation.passed, evaluation.description


def test_no_row_values_in_metadata(monitored):
    spec, data, instance = monitored["spec"], monitored["data"], monitored["instance"]
    source = spec.source_by_name["applications"]
    raw = pd.read_csv(partition_path(data, source, day(SPIKE[0])), dtype=str)
    values = set(raw["application_id"])
    for column in source.pii_columns:
        values |= set(raw[column].dropna())
    stored = read_partitions(data, FEATURES, [day(SPIKE[0])])
    values |= set(stored["application_id"])
    texts = []
    for result in monitored["reports"].values():
        texts += [str(e) for e in instance.all_logs(result.run_id)]
    text = " ".join(texts)
    assert "drift_report_within_limits" in text
    assert not [v for v in values if v in text]
    summary = (data / "warehouse" / "drift_report" / f"{day(SPIKE[0])}.json").read_text()
    assert not [v for v in values if v in summary]


@pytest.fixture
def webserver(monitored):
    """`dagster-webserver` on a free port over the module's instance; yields its base URL."""
    home = monitored["home"]
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (home / ".nux").mkdir(exist_ok=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LENDING_PIPELINE_SPEC": str(monitored["spec_path"]),
        "PYTHONPATH": str(ROOT),
    }
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1"]
    command += ["-p", str(port), "-m", "lending_pipeline.definitions"]
    log = home / "webserver.log"
    with log.open("w") as output:
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "webserver not up after 120 s"
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


PLOTS = (("model_evaluation", "plots", 4), ("drift_report", "psi_chart", 1))
UI_TIMEOUT_MS = 180_000  # a busy 2-core machine renders the asset graph slowly


def test_ui_shows_the_asset_graph_and_the_failed_check(webserver, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)  # its own 5 s default ignores the page's timeout
    shots = Path(os.environ.get("LENDING_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(f"{webserver}/assets/drift_report?view=lineage")
        expect(page.get_by_role("progressbar")).to_have_count(0)
        expect(page.get_by_text("applicant_features", exact=True).first).to_be_visible()
        expect(page.get_by_text("drift_report", exact=True).first).to_be_visible()
        page.screenshot(path=shots / "lineage.png")

        page.goto(f"{webserver}/assets/drift_report?view=checks")
        expect(page.get_by_role("progressbar")).to_have_count(0)
        page.get_by_text("drift_report_within_limits", exact=True).first.click()
        expect(page.get_by_text("Latest execution")).to_be_visible()
        for text in ("Failed", "worst_tier", "retrain", "drifted_features", "runbook"):
            expect(page.get_by_text(text, exact=True).first).to_be_visible()
        expect(page.get_by_text(day(MISSING_DAY), exact=True).first).to_be_visible()
        page.screenshot(path=shots / "drift_failed_check.png", full_page=True)

        for asset, key, count in (
            ("model_evaluation", "plots", 4),
            ("drift_report", "psi_chart", 1),
        ):
            page.goto(f"{webserver}/assets/{asset}?view=events")
            expect(page.get_by_role("progressbar")).to_have_count(0)
            row = page.get_by_role("row").filter(has_text=key).first
            row.get_by_text("[Show Markdown]").click()
            images = page.get_by_role("dialog").locator("img")
            expect(images).to_have_count(count)
            for i in range(count):
                loaded = images.nth(i).evaluate("img => img.complete && img.naturalWidth > 100")
                assert loaded, (asset, key, i)
            page.wait_for_timeout(1_000)  # the dialog fades in: a settled screenshot
            page.screenshot(path=shots / f"{asset}_{key}.png")
            page.keyboard.press("Escape")
        browser.close()
    print(f"screenshots: {shots}")
    assert (shots / "drift_failed_check.png").stat().st_size > 10_000


def sensor_tick(sensor, monitored, cursor=None):
    context = dg.build_sensor_context(
        instance=monitored["instance"], cursor=cursor, definitions=monitored["defs"]
    )
    return sensor.evaluate_tick(context)


def test_drift_sensor_requests_one_run_per_event_and_advances(monitored):
    sensor = monitored["defs"].resolve_sensor_def(DRIFT_SENSOR)
    first = sensor_tick(sensor, monitored)
    assert [r.run_key for r in first.run_requests] == [f"drift:{day(SPIKE[0])}:utilization"]
    tags = first.run_requests[0].tags
    assert tags["lending/reason"] == "drift"
    assert tags["lending/drift_partition"] == day(SPIKE[0])
    assert tags["lending/drift_worst_feature"] == "utilization"
    assert float(tags["lending/drift_worst_psi"]) >= 0.25
    assert tags["lending/drifted_features"].startswith("utilization=")
    cursor = json.loads(first.cursor)
    assert cursor["last_id"] > 0 and cursor["last_trigger"] is not None

    again = sensor_tick(sensor, monitored, first.cursor)
    assert not again.run_requests
    assert json.loads(again.cursor)["last_id"] == cursor["last_id"]


def test_drift_sensor_honours_the_cooldown(monitored):
    sensor = monitored["defs"].resolve_sensor_def(DRIFT_SENSOR)
    recent = json.dumps({"last_id": 0, "last_trigger": dt.datetime.now().timestamp() - 3600})
    cooled = sensor_tick(sensor, monitored, recent)
    assert not cooled.run_requests
    assert "cooldown" in cooled.skip_message

    long_ago = json.dumps({"last_id": 0, "last_trigger": dt.datetime.now().timestamp() - 90_000})
    after = sensor_tick(sensor, monitored, long_ago)
    assert [r.run_key for r in after.run_requests] == [f"drift:{day(SPIKE[0])}:utilization"]

    no_cooldown = monitoring_spec(monitored["data"].parent / "spec0.yaml", cooldown_hours=0)
    every = sensor_tick(build_drift_sensor(no_cooldown, TRAINING_JOB), monitored)
    assert [r.run_key for r in every.run_requests] == [
        f"drift:{day(SPIKE[0])}:utilization",
        f"drift:{day(SPIKE[1])}:utilization",
        f"drift:{day(MISSING_DAY)}:monthly_debt_payments",
    ]


class Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Webhook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Webhook.received = []
    monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:{server.server_port}/alerts")
    yield Webhook.received
    server.shutdown()
    server.server_close()


def test_run_failure_sensor_writes_and_posts_an_alert(monitored, webhook, tmp_path, monkeypatch):
    monkeypatch.setenv("LENDING_DATA_DIR", str(tmp_path))
    instance = monitored["instance"]
    failing = monitored["defs"].resolve_job_def(MONITORING_JOB)
    result = failing.execute_in_process(
        partition_key=day(20), instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert not result.success  # no applicant_features stored for that day
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    monitored["defs"].resolve_sensor_def("run_failure_alert_sensor")(context)
    (alert,) = [json.loads(line) for line in alerts_path(tmp_path).read_text().splitlines()]
    assert alert["kind"] == "run_failed"
    assert alert["run_id"] == result.run_id
    assert alert["job"] == MONITORING_JOB
    assert alert["partition"] == day(20)
    assert "drift_report" in alert["message"] and "no stored partition" in alert["message"]
    assert alert["runbook"].endswith("#alerts")
    assert webhook == [alert]


def test_check_failure_sensor_alerts_on_failed_checks(monitored, webhook, tmp_path, monkeypatch):
    monkeypatch.setenv("LENDING_DATA_DIR", str(tmp_path))
    sensor = monitored["defs"].resolve_sensor_def(CHECK_FAILURE_SENSOR)
    started = sensor_tick(sensor, monitored)
    assert not alerts_path(tmp_path).exists()  # the first tick only starts the cursor
    assert json.loads(started.cursor)["last_id"] > 0

    sensor_tick(sensor, monitored, json.dumps({"last_id": 0}))
    alerts = [json.loads(line) for line in alerts_path(tmp_path).read_text().splitlines()]
    failed = {(a["check"], a["partition"]) for a in alerts}
    assert ("drift_report_within_limits", day(SPIKE[0])) in failed
    assert ("drift_report_missing_fields", day(MISSING_DAY)) in failed
    assert ("drift_report_within_limits", day(UNDRIFTED)) not in failed
    within = next(a for a in alerts if a["check"] == "drift_report_within_limits")
    assert within["severity"] == "ERROR" and within["asset"] == DRIFT_REPORT.to_user_string()
    assert within["runbook"].endswith("#drift_report_within_limits")
    assert webhook == alerts


def test_alert_webhook_failure_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    from lending_pipeline.ml.alerts import make_alert, send_alert

    monkeypatch.setenv(WEBHOOK_ENV, "http://127.0.0.1:9/unreachable")
    alert = make_alert("run_failed", "boom", "runbook#alerts", run_id="r1")
    path = send_alert(tmp_path, alert)
    assert json.loads(path.read_text()) == alert
    assert "alert webhook did not take the alert" in caplog.text


def test_retraining_schedule_comes_from_the_spec(tmp_path):
    spec = monitoring_spec(
        tmp_path / "s.yaml", retrain_schedule={"cron": "15 3 * * 1-5", "timezone": "Europe/Paris"}
    )
    schedule = build_definitions(spec).resolve_schedule_def(RETRAINING_SCHEDULE)
    assert schedule.cron_schedule == "15 3 * * 1-5"
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.job_name == TRAINING_JOB
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def is_gate(evaluation) -> bool:
    """A promotion gate or the integrity check (not the training set's evidence warning)."""
    return evaluation.check_name.startswith("model_evaluation_")


def gated_spec(monitored, path, **gates):
    """The monitored spec with other gate thresholds (the same data, drift and sensor)."""
    data = yaml.safe_load(monitored["spec_path"].read_text())
    data["gates"].update(gates)
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_drift_triggers_a_retraining_that_is_gated(monitored, tmp_path):
    """Both outcomes of a drift-triggered retraining, each set up on purpose: a candidate that
    fails a gate leaves the champion serving; one that passes every gate replaces it."""
    from mlflow import MlflowClient

    instance, defs, config = monitored["instance"], monitored["defs"], monitored["config"]
    assert tracking.alias_version(config, tracking.CHAMPION) == "1"
    (request,) = tick_sensor(defs, instance, DRIFT_SENSOR).run_requests

    lenient = {  # thresholds every candidate on this data meets: the outcome is set on purpose
        "min_roc_auc": 0.5,
        "min_ks": 0.05,
        "max_ece": 0.5,
        "min_adverse_impact_ratio": 0.3,
        "max_auc_drop_vs_champion": 0.5,
        "min_auc_margin_over_baseline": -0.5,
        "min_brier_skill": -1.0,
        "max_tpr_difference": 1.0,
        "challenger_must_beat_champion": False,
        "min_group_size": 10,
    }
    impossible = {**lenient, "min_roc_auc": 0.99}
    strict = build_definitions(gated_spec(monitored, tmp_path / "strict.yaml", **impossible))
    refused = launch_requested(strict, instance, DRIFT_SENSOR, request)
    assert refused.dagster_run.tags["lending/reason"] == "drift"
    assert refused.dagster_run.tags["dagster/run_key"] == request.run_key
    assert launch_requested(defs, instance, DRIFT_SENSOR, request) is None  # run key taken
    assert not refused.success
    gates = [e for e in refused.get_asset_check_evaluations() if is_gate(e)]
    assert [e.check_name for e in gates if not e.passed] == ["model_evaluation_min_roc_auc"]
    assert tracking.alias_version(config, tracking.CHAMPION) == "1"  # not promoted
    version_tags = tracking.version_tags(config, "2")
    assert version_tags["gate.min_roc_auc"] == "fail"
    assert version_tags["lending_reason"] == "drift"
    assert version_tags["lending_drift_partition"] == day(SPIKE[0])
    assert version_tags["lending_drifted_features"].startswith("utilization=")
    assert version_tags["dagster_run_id"] == refused.run_id
    run = MlflowClient(tracking_uri=config.tracking_uri).get_run(
        tracking.version_run(config, "2").info.run_id
    )
    assert run.data.tags["lending_drift_worst_feature"] == "utilization"
    assert version_tags["partition_range"].endswith(day(MISSING_DAY))

    # the next drift event (no cooldown), under the same gates without the impossible one
    no_cooldown = monitoring_spec(tmp_path / "spec0.yaml", cooldown_hours=0)
    later = sensor_tick(build_drift_sensor(no_cooldown, TRAINING_JOB), monitored).run_requests
    second = next(r for r in later if r.run_key == f"drift:{day(SPIKE[1])}:utilization")
    passing = build_definitions(gated_spec(monitored, tmp_path / "lenient.yaml", **lenient))
    promoted = launch_requested(passing, instance, DRIFT_SENSOR, second)
    assert promoted.success, [e.description for e in promoted.get_asset_check_evaluations()]
    gates = [e for e in promoted.get_asset_check_evaluations() if is_gate(e)]
    assert gates and all(e.passed for e in gates)
    assert tracking.alias_version(config, tracking.CHAMPION) == "3"
    assert tracking.alias_version(config, tracking.PREVIOUS) == "1"
    assert tracking.version_tags(config, "3")["lending_drift_partition"] == day(SPIKE[1])
