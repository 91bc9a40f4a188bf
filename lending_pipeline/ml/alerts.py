"""Alerts for on-call: appended to `<data dir>/alerts/alerts.jsonl` and, when
`LENDING_ALERT_WEBHOOK_URL` is set, POSTed there as JSON.

An alert names what failed (run, job, asset, check), a message and a runbook link; it never holds
row values. A webhook that is down or slow is logged, never raised: the alert is in the file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.request
from pathlib import Path

WEBHOOK_ENV = "LENDING_ALERT_WEBHOOK_URL"
WEBHOOK_TIMEOUT_SECONDS = 5.0


def alerts_path(data_dir: Path) -> Path:
    return data_dir / "alerts" / "alerts.jsonl"


def make_alert(kind: str, message: str, runbook: str, **fields: str | None) -> dict:
    """One alert: time (UTC), kind, message, runbook and the given identifying fields."""
    alert = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "kind": kind}
    alert |= {k: v for k, v in fields.items() if v is not None}
    return alert | {"message": message, "runbook": runbook}


def send_alert(data_dir: Path, alert: dict, log: logging.Logger | None = None) -> Path:
    """Append the alert to the alerts file, then POST it to the webhook if one is set."""
    log = log or logging.getLogger(__name__)
    path = alerts_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(alert, sort_keys=True) + "\n")
    url = os.environ.get(WEBHOOK_ENV)
    if url:
        post(url, alert, log)
    return path


def post(url: str, alert: dict, log: logging.Logger) -> bool:
    """POST the alert as JSON; False (and a warning) when the webhook does not take it."""
    request = urllib.request.Request(
        url,
        data=json.dumps(alert).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            return 200 <= response.status < 300
    except (OSError, ValueError) as exc:
        log.warning(f"alert webhook did not take the alert ({type(exc).__name__}: {exc})")
        return False
