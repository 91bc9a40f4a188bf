"""A progress line for long headless runs: days done / failed, elapsed, ETA.

On a terminal the line is redrawn in place as items arrive; otherwise (CI logs, pipes) a line is
written every `every` seconds by a clock of its own, also while no item arrives (a run over a long
range of days reports its days only when it ends), and once at the end: a log shows the run is
alive without flooding it.
"""

from __future__ import annotations

import sys
import threading
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
    began = time.monotonic()
    counts = [0, 0]  # items done, of which failed
    stop = threading.Event()

    def line() -> str:
        return progress_line(counts[0], counts[1], total, time.monotonic() - began, unit)

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    def beat() -> None:
        while not stop.wait(every):
            write(line() + "\n")

    clock = None if live else threading.Thread(target=beat, name="progress", daemon=True)
    if clock:
        clock.start()
    try:
        for run in runs:
            counts[0] += 1
            counts[1] += bool(failed(run))
            if live:  # what the caller prints about this item starts on a clean line
                write("\r\033[K")
            yield run
            if live:
                write(line() + ("\n" if counts[0] == total else ""))
    finally:
        if clock:
            stop.set()
            clock.join()
            write(line() + "\n")
