"""The headless progress line: counts, failures, ETA; redrawn on a terminal, sparse in logs."""

import io
import time
from dataclasses import dataclass, field

from lending_pipeline.progress import progress_line, with_progress


@dataclass
class Run:
    success: bool
    failed_checks: list = field(default_factory=list)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_counts_failures_and_estimates_the_rest():
    assert progress_line(25, 1, 100, 50.0) == "days 25/100 (1 failed), 0:00:50 elapsed, ETA 0:02:30"
    assert progress_line(100, 0, 100, 3725.0) == "days 100/100, 1:02:05 elapsed"


def test_items_pass_through_and_a_log_gets_a_final_line():
    runs = [Run(True), Run(False), Run(True, ["validated_bureau_schema"]), Run(True)]
    log = io.StringIO()
    assert list(with_progress(runs, len(runs), stream=log, every=3600)) == runs
    assert log.getvalue().splitlines() == [log.getvalue().splitlines()[-1]]
    assert log.getvalue().startswith("days 4/4 (2 failed), ")


def test_a_log_hears_from_the_clock_while_no_item_arrives():
    def slow():
        for run in (Run(True), Run(True)):
            time.sleep(0.5)
            yield run

    log = io.StringIO()
    assert len(list(with_progress(slow(), 2, stream=log, every=0.1))) == 2
    lines = log.getvalue().splitlines()
    assert any(line.startswith("days 0/2, ") for line in lines), lines
    assert any(line.startswith("days 1/2, ") for line in lines), lines
    assert lines[-1].startswith("days 2/2, ") and "ETA" not in lines[-1]


def test_a_terminal_sees_the_line_redrawn_in_place():
    terminal = Terminal()
    list(with_progress([Run(True)] * 3, 3, stream=terminal))
    text = terminal.getvalue()
    assert text.count("\r\033[K") == 3 and text.endswith("days 3/3, 0:00:00 elapsed\n")
    assert "days 1/3" in text and "ETA" in text and "days 3/3" in text
