"""Processes that die with their parent: `python -m lending_pipeline.serving.child CMD ...`.

The process manager starts each serving process through this (or calls `die_with_parent`
itself): the kernel sends it SIGTERM when its parent dies, so no process of a dead parent keeps a
port or goes on answering (Linux `PR_SET_PDEATHSIG`, kept across `exec`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel for `signum` when the parent process dies; exit now if it already has."""
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m lending_pipeline.serving.child COMMAND [ARGS...]")
    die_with_parent()
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
