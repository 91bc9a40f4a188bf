"""Versioned deploys: a deployment record, blue/green slots behind one port, rollback.

`<data>/serving/deployments.json` holds the *desired* Bento (set by the `scoring_bento` asset after
a promotion, or by a rollback), the *active* one and the history of switches. `lending-pipeline
serve` (`make serve`) keeps it true: it listens on the public port (3001) and forwards each new
connection to the active slot; when the desired Bento changes it starts it on the idle slot's port
(blue 3101 / green 3102), waits until `/readyz` answers (the model is loaded), then switches new
connections to it. The old slot keeps running, so a rollback to it is immediate; a Bento that does
not become ready is recorded as failed and the active one stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from lending_pipeline.serving.package import bentoml_env, bentoml_home

SLOTS = {"blue": 3101, "green": 3102}
PUBLIC_PORT = 3001
READY_TIMEOUT = 180.0


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


def request_deploy(data_dir: Path, bento_tag: str, model_version: str, reason: str) -> dict:
    """Make a Bento the desired one; the serving supervisor switches to it when it is ready."""
    desired = {
        "bento_tag": bento_tag,
        "model_version": model_version,
        "reason": reason,
        "time": _now(),
    }
    with _locked(data_dir) as record:
        record["desired"] = desired
        record["history"].append({"event": "requested", **desired})
    return desired


def _record_switch(data_dir: Path, slot: str, desired: dict) -> None:
    with _locked(data_dir) as record:
        record["active"] = {
            "slot": slot,
            "port": SLOTS[slot],
            "bento_tag": desired["bento_tag"],
            "model_version": desired["model_version"],
            "since": _now(),
        }
        record["history"].append({"event": "switched", "slot": slot, **desired, "time": _now()})


def _append_history(data_dir: Path, entry: dict) -> None:
    with _locked(data_dir) as record:
        record["history"].append({**entry, "time": _now()})


def _request_key(desired: dict) -> tuple[str, str]:
    """A deploy request: the same Bento requested again (a new time) is tried again."""
    return desired["bento_tag"], desired["time"]


def _port_taken(port: int) -> str | None:
    """A problem when something already listens on the slot's port (e.g. a server left over
    from a supervisor that was killed): its answers must not be mistaken for the new Bento's."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no listener
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return f"port {port} is already in use; stop what listens there"
    return None


def slot_home(data_dir: Path, slot: str) -> Path:
    """A BentoML home per slot (two servers sharing one wipe each other's metrics dir), with
    the shared Bento and model stores linked in."""
    home = data_dir / "serving" / "slots" / slot
    home.mkdir(parents=True, exist_ok=True)
    shared = bentoml_home(data_dir)
    for store in ("bentos", "models"):
        (shared / store).mkdir(parents=True, exist_ok=True)
        link = home / store
        if not link.exists():
            link.symlink_to(shared / store, target_is_directory=True)
    return home


@dataclass
class Slot:
    name: str
    port: int
    bento_tag: str | None = None
    process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    """Serves the desired Bento on the public port, switching blue/green without downtime."""

    def __init__(self, data_dir: Path, port: int = PUBLIC_PORT, slots: dict | None = None):
        self.data_dir = data_dir
        self.port = port
        self.slots = {name: Slot(name, p) for name, p in (slots or SLOTS).items()}
        self.active: Slot | None = None
        self.failed: set[str] = set()
        self.logs = data_dir / "serving" / "logs"

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        print(
            f"serving on http://127.0.0.1:{self.port} (deployment record: "
            f"{record_path(self.data_dir)})",
            flush=True,
        )
        try:
            while not stop.is_set():
                await self._converge()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
        finally:
            server.close()
            for slot in self.slots.values():
                await self._stop(slot)

    async def _converge(self) -> None:
        if self.active is not None and not self.active.running:
            code = self.active.process.returncode if self.active.process else None
            _append_history(
                self.data_dir,
                {
                    "event": "exited",
                    "slot": self.active.name,
                    "bento_tag": self.active.bento_tag,
                    "problem": f"exit code {code}",
                },
            )
            print(f"slot {self.active.name} exited (code {code}); starting again", flush=True)
            self.active = None
        desired = read_record(self.data_dir).get("desired")
        if not desired or _request_key(desired) in self.failed:
            return
        if self.active is not None and self.active.bento_tag == desired["bento_tag"]:
            return
        slot = (
            next(
                (
                    s
                    for s in self.slots.values()
                    if s.bento_tag == desired["bento_tag"] and s.running
                ),
                None,
            )
            or self._idle_slot()
        )
        problem = None
        if not slot.running or slot.bento_tag != desired["bento_tag"]:
            await self._stop(slot)
            problem = _port_taken(slot.port) or await self._start(slot, desired["bento_tag"])
        problem = problem or await self._wait_ready(slot)
        if problem:
            self.failed.add(_request_key(desired))
            _append_history(self.data_dir, {"event": "failed", **desired, "problem": problem})
            print(f"deploy of {desired['bento_tag']} failed: {problem}", flush=True)
            await self._stop(slot)
            return
        self.active = slot
        _record_switch(self.data_dir, slot.name, desired)
        print(f"switched to {desired['bento_tag']} on slot {slot.name} ({slot.port})", flush=True)

    def _idle_slot(self) -> Slot:
        return next(s for s in self.slots.values() if s is not self.active)

    async def _start(self, slot: Slot, bento_tag: str) -> str | None:
        env = bentoml_env(self.data_dir)
        env["BENTOML_HOME"] = str(slot_home(self.data_dir, slot.name))
        env["LENDING_DATA_DIR"] = str(self.data_dir)
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{slot.name}.log", "ab") as log:
            try:
                slot.process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bentoml",
                    "serve",
                    bento_tag,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(slot.port),
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            except OSError as exc:
                return f"the server could not be started ({exc})"
        slot.bento_tag = bento_tag
        return None

    async def _wait_ready(self, slot: Slot) -> str | None:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        async with httpx.AsyncClient(timeout=2.0) as client:
            while asyncio.get_running_loop().time() < deadline:
                if not slot.running:
                    return f"the server exited (code {slot.process.returncode}); see its log"
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"http://127.0.0.1:{slot.port}/readyz")
                    if response.status_code == 200:
                        return None
                await asyncio.sleep(0.25)
        return f"not ready after {READY_TIMEOUT:.0f} s"

    async def _stop(self, slot: Slot) -> None:
        if slot.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(slot.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(slot.process.wait(), timeout=20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(slot.process.pid, signal.SIGKILL)
                await slot.process.wait()
        slot.process, slot.bento_tag = None, None

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        slot = self.active
        if slot is None or not slot.running:
            writer.write(_UNAVAILABLE)
            await _close(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", slot.port)
        except OSError:
            writer.write(_UNAVAILABLE)
            await _close(writer)
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


_BODY = b'{"error":"no model is being served"}'
_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_BODY)}\r\nconnection: close\r\n\r\n".encode()
    + _BODY
)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
        await writer.wait_closed()


def serve(data_dir: Path, port: int = PUBLIC_PORT, slots: dict | None = None) -> None:
    asyncio.run(Supervisor(data_dir, port, slots).run())
