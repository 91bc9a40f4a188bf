"""Links from the UI: runbook entries in check metadata, http(s) URLs, the docs server."""

import re
import urllib.error
import urllib.request

import pytest

from lending_pipeline import docs_server
from lending_pipeline.defs.metadata import runbook_metadata
from lending_pipeline.links import (
    RUNBOOK,
    mlflow_run_link,
    report_link,
    runbook_entry,
    runbook_link,
)
from lending_pipeline_tests.ports import free_port
from lending_pipeline_tests.ui import ROOT

ANCHORS_IN_CODE = re.compile(r'runbook_(?:metadata|url)\(\s*"([a-z_]+)"')


def anchors_used() -> set[str]:
    """Every literal runbook anchor the Dagster code links to, plus the drift checks' names."""
    found = set()
    for path in (ROOT / "lending_pipeline").rglob("*.py"):
        found |= set(ANCHORS_IN_CODE.findall(path.read_text()))
    return found | {
        "drift_report_within_limits",
        "drift_report_missing_fields",
        "drift_report_realised_performance",
    }


def test_every_linked_entry_exists_with_what_happened_and_what_to_do():
    anchors = anchors_used()
    assert {"validated_source_schema", "model_evaluation_gates", "alerts"} <= anchors
    page = RUNBOOK.read_text()
    for anchor in anchors:
        assert f'<a id="{anchor}"></a>' in page, anchor
        text = runbook_entry(anchor)
        assert text.startswith(("**What it means.**", "**What it is.**")), (anchor, text[:80])
        assert "**What to do" in text, anchor


def test_entry_text_stops_at_the_entry_and_its_links_open_from_the_ui(monkeypatch):
    monkeypatch.delenv("LENDING_RUNBOOK_URL", raising=False)
    monkeypatch.setenv("LENDING_DOCS_PORT", "3999")
    text = runbook_entry("validated_source_schema")
    assert "Likely causes" not in text
    assert "validated_source_expectations`" not in text  # the next entry
    assert "(http://127.0.0.1:3999/docs/runbook.md#fix-and-re-materialize-a-partition)" in text
    assert "](#" not in text and "file://" not in text


def test_runbook_metadata_links_over_http_or_to_the_hosted_docs(monkeypatch):
    monkeypatch.delenv("LENDING_RUNBOOK_URL", raising=False)
    monkeypatch.setenv("LENDING_DOCS_PORT", "3999")
    metadata = runbook_metadata("alerts")
    assert metadata["runbook"].value == "http://127.0.0.1:3999/docs/runbook.md#alerts"
    assert "**What to do.**" in metadata["runbook_entry"].value
    monkeypatch.setenv("LENDING_RUNBOOK_URL", "https://docs.example.org/lending/runbook.html")
    assert runbook_link("alerts") == "https://docs.example.org/lending/runbook.html#alerts"
    assert "(https://docs.example.org/lending/spec.md#gates)" in runbook_entry(
        "model_evaluation_gates"
    )


def test_report_and_mlflow_links(tmp_path, monkeypatch):
    monkeypatch.setenv("LENDING_DOCS_PORT", "3999")
    report = tmp_path / "reports" / "drift" / "2025-03-03.html"
    assert report_link(tmp_path, report) == "http://127.0.0.1:3999/reports/drift/2025-03-03.html"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LENDING_MLFLOW_PORT", "5999")
    assert mlflow_run_link("3", "abc") == "http://127.0.0.1:5999/#/experiments/3/runs/abc"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org/")
    assert mlflow_run_link("3", "abc") == "https://mlflow.example.org/#/experiments/3/runs/abc"


@pytest.fixture
def served(tmp_path):
    data = tmp_path / "data"
    (data / "reports" / "drift").mkdir(parents=True)
    (data / "reports" / "drift" / "2025-03-03.html").write_text("<html>report</html>")
    (data / "secret.txt").write_text("not served")
    server = docs_server.start(data, port=free_port())
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, "", ""


def test_docs_server_renders_the_runbook_with_its_anchors(served):
    status, kind, body = get(f"{served}/docs/runbook.md")
    assert status == 200 and kind.startswith("text/html")
    assert '<a id="validated_source_schema"></a>' in body
    assert 'id="fix-and-re-materialize-a-partition"' in body  # a heading's GitHub-style anchor
    assert "<table>" in body
    status, _, body = get(f"{served}/README.md")
    assert status == 200 and "<h1" in body


def test_docs_server_serves_reports_and_nothing_else(served):
    status, kind, body = get(f"{served}/reports/drift/2025-03-03.html")
    assert (status, kind, body) == (200, "text/html", "<html>report</html>")
    for path in (
        "/secret.txt",
        "/reports/../secret.txt",
        "/reports/%2e%2e/secret.txt",
        "/docs/../pyproject.toml",
        "/lending_pipeline/links.py",
        "/reports/drift/missing.html",
    ):
        assert get(f"{served}{path}")[0] == 404, path
