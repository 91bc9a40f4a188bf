"""The on-call path in a real browser: a damaged day's failed check in the Dagster UI, its
runbook entry in the check's metadata, and the runbook link opening the entry."""

import datetime as dt
import os
from pathlib import Path

import pytest

from lending_pipeline import docs_server
from lending_pipeline.ml import corrupt
from lending_pipeline.ml.synth import generate_consumer_loans, partition_path
from lending_pipeline.partitions import last_complete_day
from lending_pipeline_tests.conftest import DAYS, PER_DAY, PII_KEY
from lending_pipeline_tests.defs.helpers import run_day
from lending_pipeline_tests.ports import free_port
from lending_pipeline_tests.ui import (
    BROWSER_ARGS,
    UI_TIMEOUT_MS,
    chromium_path,
    dagster_webserver,
)

CHECK = "validated_applications_schema"
SCREENSHOTS_ENV = "LENDING_SCREENSHOTS_DIR"  # set to docs/images to refresh the docs' screenshots


def recent_day(offset: int) -> str:
    """Day `offset` of the last DAYS complete days."""
    return (last_complete_day() - dt.timedelta(days=DAYS - 1 - offset)).isoformat()


@pytest.fixture
def damaged_day(spec, instance, tmp_path, monkeypatch):
    """The last DAYS complete days landed and materialized (as `make demo` does), the last one
    with out-of-range loan amounts; the docs server and the Dagster UI over the instance."""
    data_dir = tmp_path / "data"
    first = dt.date.fromisoformat(recent_day(0))
    generate_consumer_loans(spec, data_dir, first, DAYS, PER_DAY, seed=11)
    port = free_port()
    monkeypatch.setenv("LENDING_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LENDING_PII_KEY", PII_KEY)
    monkeypatch.setenv("LENDING_DOCS_PORT", str(port))
    monkeypatch.delenv("LENDING_RUNBOOK_URL", raising=False)
    damaged = recent_day(DAYS - 1)
    path = partition_path(data_dir, spec.source_by_name["applications"], damaged)
    corrupt.corrupt(path, "out_of_range", "loan_amount")
    runs = [run_day(spec, instance, recent_day(offset)) for offset in range(DAYS)]
    assert CHECK in runs[-1].failed_checks
    assert all(run.success for run in runs[:-1]), [run.messages for run in runs]
    docs = docs_server.start(data_dir, port)
    home = tmp_path / "dagster_home"
    try:
        with dagster_webserver(home) as base:
            yield {"ui": base, "docs": f"http://127.0.0.1:{port}"}
    finally:
        docs.shutdown()


def test_failed_check_shows_its_runbook_entry_and_the_link_opens_it(damaged_day, tmp_path):
    """...and the partitions of the landed days are all there (none missing)."""
    chromium = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)  # its own 5 s default ignores the page's timeout
    shots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(f"{damaged_day['ui']}/assets/validated_applications?view=checks")
        expect(page.get_by_role("progressbar")).to_have_count(0)
        page.get_by_text(CHECK, exact=True).first.click()
        expect(page.get_by_text("Latest execution")).to_be_visible()
        expect(page.get_by_text(recent_day(DAYS - 1), exact=True).first).to_be_visible()
        expect(page.get_by_text("Failed", exact=True).first).to_be_visible()
        row = page.get_by_role("row").filter(has_text="runbook_entry")
        row.get_by_text("[Show Markdown]").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("What it means.").first).to_be_visible()
        expect(dialog.get_by_text("What to do.").first).to_be_visible()
        page.wait_for_timeout(1_000)  # the dialog fades in: a settled screenshot for the docs
        page.screenshot(path=shots / "runbook_entry_in_ui.png")
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)
        link = page.locator(
            f'a[href="{damaged_day["docs"]}/docs/runbook.md#{"validated_source_schema"}"]'
        )
        expect(link.first).to_be_visible()
        page.screenshot(path=shots / "failed_check.png", full_page=True)

        with page.context.expect_page() as opened:
            link.first.click()
        runbook = opened.value
        runbook.wait_for_load_state()
        assert runbook.url.endswith("/docs/runbook.md#validated_source_schema")
        entry = runbook.locator("#validated_source_schema")
        expect(entry).to_be_attached()
        heading = runbook.locator("h2", has_text="validated_<source>_schema")
        expect(heading).to_be_visible()
        expect(runbook.get_by_text("What to do.").first).to_be_visible()
        runbook.screenshot(path=shots / "runbook_entry.png")

        page.goto(f"{damaged_day['ui']}/assets/raw_applications?view=partitions")
        expect(page.get_by_role("progressbar")).to_have_count(0)
        expect(page.get_by_text(f"Materialized ({DAYS})", exact=True)).to_be_visible()
        expect(page.get_by_text("Missing (0)", exact=True)).to_be_visible()
        page.screenshot(path=shots / "partitions.png", full_page=True)
        browser.close()
    print(shots)
