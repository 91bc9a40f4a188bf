"""Child process groups started together and stopped together."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_groups(processes: list[subprocess.Popen], timeout: float = 30) -> None:
    """SIGTERM to each process group, then SIGKILL to those still there after `timeout`."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        os.killpg(process.pid, signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
