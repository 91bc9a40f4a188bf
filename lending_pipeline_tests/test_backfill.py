"""`materialize` appears in the Dagster UI as one backfill of the daily job over the days."""

import json
import os
import shutil
import urllib.request
from pathlib import Path

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG as RANGE_END,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_START_TAG as RANGE_START,
)

from lending_pipeline.backfill import BACKFILL_ID_TAG
from lending_pipeline.cli import main
from lending_pipeline.ml import corrupt
from lending_pipeline.ml.synth import partition_path
from lending_pipeline.runs import SPLIT_TAG
from lending_pipeline_tests.conftest import DAYS, day
from lending_pipeline_tests.ui import BROWSER_ARGS, UI_TIMEOUT_MS, chromium_path, dagster_webserver

QUERY = """{ partitionBackfillOrError(backfillId: "%s") { ... on PartitionBackfill {
  status numPartitions partitionSet { name }
  partitionStatuses { results { partitionName runStatus } } } } }"""


def graphql(base: str, query: str) -> dict:
    body = json.dumps({"query": query}).encode()
    request = urllib.request.Request(
        f"{base}/graphql", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["data"]


def show_in_browser(url: str, screenshot: Path) -> None:
    """The backfill page lists the daily job's partition set with one failed day."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 700})
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(url)
        expect(page.get_by_role("progressbar")).to_have_count(0)
        expect(page.get_by_text("daily_ingestion_job_partition_set").first).to_be_visible()
        expect(page.get_by_text("Partition selection")).to_be_visible()
        page.screenshot(path=screenshot)
        browser.close()


def test_materialize_is_one_backfill_with_every_day(spec, data_dir, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    path = partition_path(data_dir, spec.source_by_name["applications"], day(1))
    corrupt.corrupt(path, "out_of_range", "loan_amount")

    code = main(["materialize", "--workers", "1"])
    out = capsys.readouterr().out

    assert code == 1  # one day failed its checks
    days = [day(i) for i in range(DAYS)]
    with dg.DagsterInstance.get() as instance:
        [backfill] = instance.get_backfills()
        assert backfill.partition_names == days
        assert backfill.status == BulkActionStatus.COMPLETED_FAILED
        assert backfill.failure_count == 1
        runs = instance.get_runs(
            filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill.backfill_id})
        )
        # one run over the three days failed on day 1 and was split: each day then ran alone
        # (the days around a damaged day run as ranges; here each is one day)
        ranges = sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in runs)
        assert ranges == [(d, d) for d in days]
        [split] = instance.get_runs(filters=dg.RunsFilter(tags={SPLIT_TAG: backfill.backfill_id}))
        assert (split.tags[RANGE_START], split.tags[RANGE_END]) == (days[0], days[-1])
    assert f"one Dagster backfill {backfill.backfill_id}: " in out
    assert f"/runs/b/{backfill.backfill_id}" in out

    with dagster_webserver(home) as base:
        shown = graphql(base, QUERY % backfill.backfill_id)["partitionBackfillOrError"]
        if shutil.which("chromium"):
            shots = Path(os.environ.get("LENDING_SCREENSHOTS_DIR") or tmp_path)
            show_in_browser(f"{base}/runs/b/{backfill.backfill_id}", shots / "backfill.png")
    assert shown["status"] == "COMPLETED_FAILED" and shown["numPartitions"] == DAYS
    assert shown["partitionSet"]["name"] == "daily_ingestion_job_partition_set"
    statuses = {r["partitionName"]: r["runStatus"] for r in shown["partitionStatuses"]["results"]}
    assert statuses == {day(0): "SUCCESS", day(1): "FAILURE", day(2): "SUCCESS"}
