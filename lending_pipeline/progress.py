"""A progress line for long headless runs: days done / failed, elapsed, ETA.

On a terminal the line is redrawn in place; otherwise (CI logs, pipes) a line is written every
`every` seconds and at the end, so a log shows the run is alive without flooding it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(done: int, failed: int, total: int, elapsed: float, unit: str = "days") -> str:
    """E.g. `days 37/100 (1 failed), 0:00:41 elapsed, ETA 0:01:10`."""
    text = f"{unit} {done}/{total}"
    if failed:
        text += f" ({failed} failed)"
    text += f", {_clock(elapsed)} elapsed"
    if 0 < done < total:
        text += f", ETA {_clock(elapsed / done * (total - done))}"
    return text


def with_progress(
    runs: Iterable,
    total: int,
    failed=lambda run: not run.success or bool(getattr(run, "failed_checks", [])),
    stream: TextIO | None = None,
    every: float = 10.0,
    unit: str = "days",
) -> Iterator:
    """Yield each item of `runs` unchanged while keeping a progress line on `stream` (stderr)."""
    stream = stream or sys.stderr
    live = stream.isatty()
    began = last = time.monotonic()
    bad = 0
    for done, run in enumerate(runs, start=1):
        bad += bool(failed(run))
        if live:  # what the caller prints about this item starts on a clean line
            stream.write("\r\033[K")
            stream.flush()
        yield run
        now = time.monotonic()
        line = progress_line(done, bad, total, now - began, unit)
        if live:
            stream.write(line + ("\n" if done == total else ""))
            stream.flush()
        elif now - last >= every or done == total:
            stream.write(line + "\n")
            stream.flush()
            last = now
