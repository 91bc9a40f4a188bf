"""The HTTP reverse proxy in front of the blue/green slots: HAProxy, routing per request.

The configuration names both slots as servers of one backend; exactly one is in service, the
other in maintenance (it receives nothing). A switch goes through HAProxy's runtime API (a unix
socket): the new slot is put in service and the old one in maintenance, so the next request of
every client goes to the new slot, on a new connection or a kept-alive one; requests in flight
on the old slot finish there. The configuration file is rewritten on every switch so that a
restarted proxy comes back routing to the same slot. Requests are not logged (a path or query
string may carry what a client should not have sent); state changes are.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

from lending_pipeline.serving.supervision import socket_file

BACKEND = "slots"
UNKNOWN_ROUTE = {"error": "no such route (see /docs.json)", "detail": []}
ERRORS = {
    502: ("Bad Gateway", "the scoring server failed to answer"),
    503: ("Service Unavailable", "no model is being served"),
    504: ("Gateway Timeout", "the scoring server did not answer in time"),
}


_MAINTENANCE = 0x01 | 0x02 | 0x20 | 0x40  # forced, inherited, resolution, hostname maintenance


class ProxyError(RuntimeError):
    """The proxy cannot be configured or reached."""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if found is None:
        raise ProxyError(
            "HAProxy is not installed: `apt-get install haproxy` (Debian) or see docs/serving.md"
        )
    return found


def _error_file(status: int) -> bytes:
    reason, message = ERRORS[status]
    body = json.dumps({"error": message, "detail": []}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\ncache-control: no-cache\r\nretry-after: 1\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


# Servers are in service while their /readyz answers 200.
HEALTH_CHECK = [
    "    option httpchk GET /readyz",
    "    http-check expect status 200",
    "    default-server inter 1s fastinter 250ms downinter 500ms fall 2 rise 1",
]


def defaults_section(run_dir: Path, timeout: float) -> list[str]:
    """Logging and the `defaults` section (HTTP mode, timeouts for answers of up to `timeout`
    seconds, JSON error answers) of the proxy's and the products router's configurations."""
    seconds = int(timeout) + 5
    return [
        "    log stdout format short local0 notice",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlog-normal",
        "    timeout connect 2s",
        f"    timeout client {seconds}s",
        f"    timeout server {seconds}s",
        "    timeout http-keep-alive 60s",
        "    timeout http-request 10s",
        "    timeout check 5s",  # a loaded machine's slow answer is not a dead server
        *error_files(run_dir),
    ]


def error_files(run_dir: Path) -> list[str]:
    """HAProxy `errorfile` lines for the proxy's own answers, each a JSON error body."""
    lines = []
    for status in ERRORS:
        path = run_dir / f"{status}.http"
        path.write_bytes(_error_file(status))
        lines.append(f"    errorfile {status} {path}")
    return lines


def render_config(
    run_dir: Path, port: int, slots: dict[str, int], active: str | None, timeout: float
) -> str:
    """HAProxy's configuration: the public port, both slots, `active` in service. Paths the
    service does not have are answered here (404): a made-up path never reaches the server,
    whose request metrics are labelled by path."""
    from lending_pipeline.serving.front import OPEN_PATHS, OPEN_PREFIXES, ROUTES

    not_found = run_dir / "404.json"
    not_found.write_text(json.dumps(UNKNOWN_ROUTE), "utf-8")
    paths = " ".join(sorted({*ROUTES, *OPEN_PATHS}))
    servers = [
        f"    server {name} 127.0.0.1:{slot_port} check" + ("" if name == active else " disabled")
        for name, slot_port in slots.items()
    ]
    return "\n".join(
        [
            "global",
            f"    stats socket {socket_path(run_dir)} mode 600 level admin",
            *defaults_section(run_dir, timeout),
            "    retries 3",
            "    retry-on conn-failure empty-response",
            "frontend public",
            f"    bind 127.0.0.1:{port}",
            "    http-request set-log-level silent",
            f"    acl known_path path {paths}",
            f"    acl static_path path_beg {' '.join(OPEN_PREFIXES)}",
            "    http-request return status 404 content-type application/json "
            f"file {not_found} if !known_path !static_path",
            f"    default_backend {BACKEND}",
            f"backend {BACKEND}",
            *HEALTH_CHECK,
            *servers,
            "",
        ]
    )


def socket_path(run_dir: Path) -> Path:
    return socket_file(run_dir, "haproxy.sock")


def write_config(
    run_dir: Path, port: int, slots: dict[str, int], active: str | None, timeout: float
) -> Path:
    path = run_dir / "haproxy.cfg"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(render_config(run_dir, port, slots, active, timeout), "utf-8")
    temporary.replace(path)
    return path


def command(run_dir: Path, line: str, timeout: float = 5.0) -> str:
    """One command on HAProxy's runtime API; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            client.connect(str(socket_path(run_dir)))
            client.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := client.recv(65536):
                chunks.append(chunk)
        except OSError as exc:
            raise ProxyError(f"the proxy's runtime API did not answer ({exc})") from None
    return b"".join(chunks).decode()


def route_to(run_dir: Path, active: str, slots: dict[str, int]) -> None:
    """Put `active` in service and every other slot in maintenance, in that order."""
    answers = [command(run_dir, f"set server {BACKEND}/{active} state ready")]
    for name in slots:
        if name != active:
            answers.append(command(run_dir, f"set server {BACKEND}/{name} state maint"))
    problems = [a.strip() for a in answers if a.strip()]
    if problems:
        raise ProxyError(f"the proxy refused the switch: {'; '.join(problems)}")


def routed(run_dir: Path) -> dict[str, str]:
    """Each slot's state in the proxy: `ready` (in service) or `maint`, and whether its health
    check passes (`up`/`down`)."""
    lines = command(run_dir, f"show servers state {BACKEND}").splitlines()
    states = {}
    for line in lines:
        fields = line.split()
        if len(fields) < 7 or not fields[0].isdigit():
            continue
        name, operational, admin = fields[3], int(fields[5]), int(fields[6])
        states[name] = ("maint" if admin & _MAINTENANCE else "ready") + (
            "/up" if operational == 2 else "/down"
        )
    return states
