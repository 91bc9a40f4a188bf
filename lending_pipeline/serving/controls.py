"""The kill switch: automated decisions suspended, every application referred to a person.

Engaged by an admin (`lending-pipeline kill-switch engage --reason ...` or `POST /kill_switch`)
or by the spec (`scoring.enabled: false`), every application is answered `refer`; the model's
probability and score are still computed and recorded, and each decision's audit entry says the
decision was suspended and what the model would have decided. Engaging and lifting are audited.
The state lives in `<data>/serving/kill_switch.json`, so every worker of every slot sees it and it
survives restarts; a worker re-reads the file only when it changed (one `stat` per request).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

OFF = {"engaged": False}


def switch_path(data_dir: Path) -> Path:
    return data_dir / "serving" / "kill_switch.json"


def read_switch(data_dir: Path) -> dict:
    path = switch_path(data_dir)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return dict(OFF)


def set_switch(data_dir: Path, engaged: bool, reason: str, by: str) -> dict:
    """Engage or lift the switch: audited first, then written (atomically)."""
    from lending_pipeline.ml import audit

    state = {
        "engaged": engaged,
        "reason": reason[:500],
        "by": by[:300],
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    store = audit.open_store(data_dir)
    try:
        (written,) = store.append("kill_switch", [state])
        store.checkpoint_head()
    finally:
        store.close()
    path = switch_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)
    return {**state, "audit_seq": written.seq}


class Switch:
    """A worker's view of the switch: the spec's `scoring.enabled` and the state file."""

    def __init__(self, data_dir: Path, enabled_by_spec: bool):
        self.path = switch_path(data_dir)
        self.enabled_by_spec = enabled_by_spec
        self._seen: int | None = None
        self._state = dict(OFF)

    def state(self) -> dict:
        """The switch as it is now (`engaged`, and why and by whom when it is)."""
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp != self._seen:
            self._seen = stamp
            self._state = read_switch(self.path.parents[1]) if stamp is not None else dict(OFF)
        if not self.enabled_by_spec:
            return {"engaged": True, "reason": "scoring.enabled is false in the spec", "by": "spec"}
        return self._state

    def engaged(self) -> bool:
        return bool(self.state()["engaged"])
