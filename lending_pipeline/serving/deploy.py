"""Versioned deploys: the deployment record, the blue/green deployer and `serve`.

`<data>/serving/deployments.json` holds the *desired* Bento (set by the `scoring_bento` asset
after a promotion, by `package` or by a rollback), the *active* one (slot, its port, the proxy's
port, Bento, model version) and the history of switches, failures and restarts.

`lending-pipeline serve` (`make serve`) runs the serving stack under a process manager
(`supervision.py`): HAProxy on the public port (3001) routing each request to the active slot
(`proxy.py`), a `bentoml serve` per slot (blue 3101 / green 3102; `slot.py`) and the deployer
(`Deployer`, this module's `main`). When the desired Bento changes, the deployer starts it on
the idle slot, waits until `/readyz` answers (model loaded, audit log writable), then switches the
proxy: the next request of every client, kept-alive or not, goes to the new slot; requests in
flight on the old one finish there. The old slot keeps running, so a rollback to it is
immediate. A Bento that does not become ready is recorded as failed and the active one stays. A
killed server, worker or proxy is restarted by the process manager on the same slot with the
same Bento; meanwhile the proxy answers 503 with `retry-after`.

A deploy request carries a MAC under the audit key, made by the command that checked the
version's gates (`package`, a rollback, the `scoring_bento` asset). The deployer acts only on a
request whose MAC verifies, and adopts a recorded active Bento after a restart only if the
request that made it active verifies: a deployments.json edited by hand (or by anything without
the key) deploys nothing; the refusal is recorded in its history.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
import xmlrpc.client
from pathlib import Path

import httpx

from lending_pipeline.ml import audit
from lending_pipeline.serving import proxy
from lending_pipeline.serving.slot import read_tag, write_tag

SLOTS = {"blue": 3101, "green": 3102}
PUBLIC_PORT = 3001
READY_TIMEOUT = 180.0
SCORING_TIMEOUT = 60.0
REQUEST_FIELDS = ("bento_tag", "model_version", "reason", "time")
UNSIGNED = (
    "not a deploy request made by lending-pipeline (its MAC under the audit key does not "
    "verify: deployments.json edited by hand?); deploy with `lending-pipeline package`"
)


def record_path(data_dir: Path) -> Path:
    return data_dir / "serving" / "deployments.json"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _locked(data_dir: Path):
    """The deployment record, read under an exclusive lock and written back atomically."""
    path = record_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = read_record(data_dir)
        yield record
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", "utf-8")
        temporary.replace(path)


def read_record(data_dir: Path) -> dict:
    path = record_path(data_dir)
    if not path.exists():
        return {"desired": None, "active": None, "history": []}
    return json.loads(path.read_text(encoding="utf-8"))


def gave_up(history: list[dict], **request) -> dict | None:
    """The history entry of the deployer refusing or failing a request whose fields are
    `request` (e.g. `bento_tag=...`, `signature=...`); None while it has not given up on it."""
    return next(
        (
            h
            for h in history
            if h["event"] in ("failed", "refused")
            and all(h.get(field) == value for field, value in request.items())
        ),
        None,
    )


def request_signature(request: dict, key: bytes | None = None) -> str:
    """The MAC of a deploy request under the audit key (`LENDING_AUDIT_KEY`)."""
    key = audit.audit_key() if key is None else key
    body = json.dumps({f: request.get(f) for f in REQUEST_FIELDS}, sort_keys=True).encode()
    return hmac.new(key, b"lending-pipeline deploy request\0" + body, hashlib.sha256).hexdigest()


def signed(request: dict | None) -> bool:
    """Whether a deploy request carries a MAC that verifies under the audit key."""
    given = (request or {}).get("signature")
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given, request_signature(request))


def request_deploy(data_dir: Path, bento_tag: str, model_version: str, reason: str) -> dict:
    """Make a Bento the desired one (a signed request); the deployer switches to it when it is
    ready. Callers check the version's gates first."""
    desired = {
        "bento_tag": bento_tag,
        "model_version": model_version,
        "reason": reason,
        "time": _now(),
    }
    desired["signature"] = request_signature(desired)
    with _locked(data_dir) as record:
        record["desired"] = desired
        record["history"].append({"event": "requested", **desired})
    return desired


def _record_switch(data_dir: Path, slot: str, port: int, proxy_port: int, desired: dict) -> None:
    with _locked(data_dir) as record:
        record["active"] = {
            "slot": slot,
            "port": port,
            "proxy_port": proxy_port,
            "bento_tag": desired["bento_tag"],
            "model_version": desired["model_version"],
            "since": _now(),
            "request": {f: desired.get(f) for f in (*REQUEST_FIELDS, "signature")},
        }
        record["history"].append(
            {"event": "switched", "slot": slot, "port": port, **desired, "time": _now()}
        )


def _append_history(data_dir: Path, entry: dict) -> None:
    with _locked(data_dir) as record:
        record["history"].append({**entry, "time": _now()})


def _request_key(desired: dict) -> tuple[str, str]:
    """A deploy request: the same Bento requested again (a new time) is tried again."""
    return desired.get("bento_tag"), desired.get("time")


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no listener
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class Deployer:
    """Makes the desired Bento the active one, blue/green, through the process manager and the
    proxy. Everything it needs survives it in files (record, slot tags, proxy configuration), so
    a restarted deployer carries on where it stopped."""

    def __init__(self, data_dir: Path, port: int, slots: dict[str, int], supervision):
        from lending_pipeline.serving.supervision import run_dir

        self.data_dir = data_dir
        self.port = port
        self.slots = slots
        self.supervision = supervision
        self.run_dir = run_dir(data_dir)
        self.active: str | None = None
        self.failed: set[tuple[str, str]] = set()
        self.unrouted: dict | None = None  # a switch the proxy has not confirmed yet
        self.pids: dict[str, int] = {}

    def run(self, stop: threading.Event) -> None:
        """Recover, then converge every half second until `stop`; a process manager that does
        not answer (it is shutting down or restarting) is waited for."""
        recovered = False
        while not stop.is_set():
            try:
                if not recovered:
                    self.recover()
                    recovered = True
                self.converge()
            except (xmlrpc.client.Fault, OSError) as exc:
                if not stop.is_set():
                    print(f"process manager unavailable ({exc}); retrying", flush=True)
                stop.wait(2.0)
            stop.wait(0.5)

    def recover(self) -> None:
        """Take over what a previous deployer (or a previous `serve`) left: the recorded active
        slot, if it still holds that Bento, and every slot that has a Bento assigned."""
        active = read_record(self.data_dir).get("active")
        slot = (active or {}).get("slot")
        request = (active or {}).get("request") or {}
        trusted = signed(request) and request.get("bento_tag") == (active or {}).get("bento_tag")
        if active and not trusted:
            print(f"recorded active Bento not adopted: {UNSIGNED}", flush=True)
        elif slot in self.slots and read_tag(self.data_dir, slot) == active["bento_tag"]:
            self.active = slot
            self.unrouted = {
                "bento_tag": active["bento_tag"],
                "model_version": active["model_version"],
                "recovered": True,
            }
        for name in self.slots:
            if read_tag(self.data_dir, name) is not None:
                self.supervision.start(name)

    def converge(self) -> None:
        if self.unrouted is not None:
            self._route(self.active, self.unrouted)
        self._note_restarts()
        desired = read_record(self.data_dir).get("desired")
        if not desired or _request_key(desired) in self.failed:
            return
        tag = desired.get("bento_tag")
        if self.active is not None and read_tag(self.data_dir, self.active) == tag:
            return  # served already (checked every tick: the MAC only when there is work)
        if not signed(desired):
            self.failed.add(_request_key(desired))
            _append_history(self.data_dir, {"event": "refused", **desired, "problem": UNSIGNED})
            print(f"deploy of {tag} refused: {UNSIGNED}", flush=True)
            return
        slot = next((s for s in self.slots if read_tag(self.data_dir, s) == tag), None)
        slot = slot or self._idle_slot()
        problem = self._start(slot, tag)
        problem = problem or self._wait_ready(slot)
        if problem:
            self.failed.add(_request_key(desired))
            _append_history(self.data_dir, {"event": "failed", **desired, "problem": problem})
            print(f"deploy of {tag} failed: {problem}", flush=True)
            self.supervision.stop(slot)
            return
        self.active = slot
        proxy.write_config(self.run_dir, self.port, self.slots, slot, SCORING_TIMEOUT)
        self._route(slot, desired)

    def _idle_slot(self) -> str:
        free = [s for s in self.slots if s != self.active]
        return next((s for s in free if read_tag(self.data_dir, s) is None), free[0])

    def _start(self, slot: str, tag: str) -> str | None:
        if read_tag(self.data_dir, slot) != tag:
            self.supervision.stop(slot)
            write_tag(self.data_dir, slot, tag)
        if self.supervision.state(slot) != "RUNNING" and port_in_use(self.slots[slot]):
            return f"port {self.slots[slot]} is already in use by another process"
        self.supervision.start(slot)
        self.pids[slot] = self.supervision.pid(slot)
        return None

    def _wait_ready(self, slot: str) -> str | None:
        port, pid = self.slots[slot], self.pids.get(slot)
        log = self.data_dir / "serving" / "logs" / f"{slot}.log"
        deadline = time.monotonic() + READY_TIMEOUT
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                state = self.supervision.state(slot)
                current = self.supervision.pid(slot)
                if state in ("EXITED", "BACKOFF", "FATAL") or (pid and current not in (0, pid)):
                    return f"the server exited while starting; see {log}"
                pid = pid or current
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        self.pids[slot] = current
                        return None
                time.sleep(0.25)
        return f"not ready after {READY_TIMEOUT:.0f} s; see {log}"

    def _route(self, slot: str, desired: dict) -> None:
        """Switch the proxy to `slot`; record the switch once the proxy confirmed it (until then
        it is retried: a restarting proxy routes by its configuration, already written)."""
        try:
            proxy.route_to(self.run_dir, slot, self.slots)
        except proxy.ProxyError as exc:
            if self.unrouted is None:
                print(f"switch to slot {slot} pending: {exc}", flush=True)
            self.unrouted = desired
            return
        self.unrouted = None
        if desired.get("recovered"):
            print(f"serving {desired['bento_tag']} on slot {slot} (recovered)", flush=True)
            return
        _record_switch(self.data_dir, slot, self.slots[slot], self.port, desired)
        print(f"switched to {desired['bento_tag']} on slot {slot} ({self.slots[slot]})", flush=True)

    def _note_restarts(self) -> None:
        """Record a restart of the active slot's server by the process manager."""
        slot = self.active
        if slot is None:
            return
        pid = self.supervision.pid(slot)
        if pid and self.pids.get(slot) not in (None, pid):
            _append_history(
                self.data_dir,
                {"event": "restarted", "slot": slot, "bento_tag": read_tag(self.data_dir, slot)},
            )
            print(f"slot {slot} was restarted by the process manager", flush=True)
        if pid:
            self.pids[slot] = pid


def serve(data_dir: Path, port: int = PUBLIC_PORT, slots: dict | None = None) -> None:
    """Write the proxy's and the process manager's configuration and run the process manager
    in the foreground (this process becomes supervisord)."""
    from lending_pipeline.ml import audit, keyring
    from lending_pipeline.serving.auth import load_callers
    from lending_pipeline.serving.supervision import logs_dir, render_config, run_dir

    slots = dict(slots or SLOTS)
    data_dir = data_dir.resolve()
    keyring.load()  # refuse to start without the secrets
    audit.audit_key()
    load_callers()
    haproxy = proxy.haproxy_binary()
    run = run_dir(data_dir)
    _refuse_second_stack(run)
    taken = [p for p in (port, *slots.values()) if port_in_use(p)]
    if taken:
        raise RuntimeError(f"port(s) {', '.join(map(str, taken))} already in use")
    active = read_record(data_dir).get("active") or {}
    routed = active.get("slot")
    if routed not in slots or read_tag(data_dir, routed) != active.get("bento_tag"):
        routed = None
    config = proxy.write_config(run, port, slots, routed, SCORING_TIMEOUT)
    manager = run / "supervisord.conf"
    manager.write_text(render_config(data_dir, port, slots, config, haproxy), "utf-8")
    print(
        f"serving on http://127.0.0.1:{port} (slots {', '.join(map(str, slots.values()))}); "
        f"deployment record: {record_path(data_dir)}; logs: {logs_dir(data_dir)}",
        flush=True,
    )
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    os.umask(0o077)  # logs, sockets and run files: owner only
    os.execv(sys.executable, [sys.executable, "-m", "supervisor.supervisord", "-c", str(manager)])


def _refuse_second_stack(run: Path) -> None:
    """Refuse when the process manager of this data dir is still running."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((run / "supervisord.pid").read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"supervisord" in command:
            raise RuntimeError(f"this data dir is already being served (process manager pid {pid})")


def main(argv: list[str] | None = None) -> None:
    """The deployer program under the process manager."""
    from lending_pipeline.serving.child import die_with_parent
    from lending_pipeline.serving.supervision import Supervision

    parser = argparse.ArgumentParser(description="the blue/green deployer")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", required=True, help="name=port,name=port")
    args = parser.parse_args(argv)
    die_with_parent()
    slots = {name: int(p) for name, p in (item.split("=") for item in args.slots.split(","))}
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    deployer = Deployer(args.data_dir, args.port, slots, Supervision(args.data_dir))
    deployer.run(stop)


if __name__ == "__main__":
    main()
