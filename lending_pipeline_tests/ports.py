"""Free loopback ports for the servers the tests start."""

import random
import socket
from pathlib import Path


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections' local ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range when there is room: a port
    from that range can be taken by an outgoing connection's local end before the server that
    was given it binds it (a heavily loaded test run opens thousands of connections)."""
    low = _ephemeral_start()
    candidates = random.sample(range(20000, low), min(200, max(low - 20000, 0)))
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
