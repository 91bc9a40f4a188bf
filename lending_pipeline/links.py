"""Links a browser opens from the Dagster UI (http(s), never `file://`) and the runbook text.

The runbook, the other docs and the reports folder are served on loopback by `make dev`
(`lending_pipeline.docs_server`, port `LENDING_DOCS_PORT`, default 3002); `LENDING_RUNBOOK_URL`
points runbook links at a hosted copy instead. MLflow runs link to the tracking server when
`MLFLOW_TRACKING_URI` is http(s), else to the MLflow UI `make dev` starts (`LENDING_MLFLOW_PORT`,
default 5000). The drift dashboard is the Evidently UI `make dev` starts (`LENDING_EVIDENTLY_PORT`,
default 8000).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urljoin

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO_ROOT / "docs"
RUNBOOK = DOCS_DIR / "runbook.md"

RUNBOOK_ENV = "LENDING_RUNBOOK_URL"
DOCS_PORT_ENV = "LENDING_DOCS_PORT"
MLFLOW_PORT_ENV = "LENDING_MLFLOW_PORT"
DEFAULT_DOCS_PORT = 3002
DEFAULT_MLFLOW_PORT = 5000
EVIDENTLY_PORT_ENV = "LENDING_EVIDENTLY_PORT"
DEFAULT_EVIDENTLY_PORT = 8000

_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
_LABEL = re.compile(r"^\*\*([^*]+?)\.?\*\*")
_HAPPENED = ("what it means", "what it is")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def docs_port() -> int:
    return int(os.environ.get(DOCS_PORT_ENV) or DEFAULT_DOCS_PORT)


def docs_base_url() -> str:
    """Where the local docs server answers (`make dev`)."""
    return f"http://127.0.0.1:{docs_port()}"


def runbook_link(anchor: str) -> str:
    """The runbook entry's URL: `LENDING_RUNBOOK_URL#anchor`, else the local docs server."""
    base = os.environ.get(RUNBOOK_ENV) or f"{docs_base_url()}/docs/runbook.md"
    return f"{base}#{anchor}"


def report_link(data_dir: Path, report: Path) -> str:
    """A file under `<data dir>/reports/`, as served by the local docs server."""
    relative = report.resolve().relative_to((data_dir / "reports").resolve())
    return f"{docs_base_url()}/reports/{quote(relative.as_posix())}"


def mlflow_ui_base(tracking_uri: str | None = None) -> str:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://127.0.0.1:{int(os.environ.get(MLFLOW_PORT_ENV) or DEFAULT_MLFLOW_PORT)}"


def mlflow_run_link(experiment_id: str, run_id: str, tracking_uri: str | None = None) -> str:
    """The run's page in the MLflow UI."""
    return f"{mlflow_ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def evidently_port() -> int:
    return int(os.environ.get(EVIDENTLY_PORT_ENV) or DEFAULT_EVIDENTLY_PORT)


def evidently_ui_base() -> str:
    """Where `make dev` serves the Evidently UI (the drift dashboard)."""
    return f"http://127.0.0.1:{evidently_port()}"


def evidently_snapshot_link(project_id: str, snapshot_id: str) -> str:
    """A day's snapshot page in the Evidently UI."""
    return f"{evidently_ui_base()}/projects/{project_id}/reports/{snapshot_id}"


def evidently_dashboard_link(project_id: str) -> str:
    """The project's dashboard in the Evidently UI."""
    return f"{evidently_ui_base()}/projects/{project_id}"


@lru_cache(maxsize=64)
def _entries(path: str, mtime: float) -> dict[str, str]:
    """Runbook entries by anchor: the text from `<a id=...>` to the next entry or rule."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        found = _ANCHOR.match(line.strip())
        if found:
            current = entries.setdefault(found.group(1), [])
            continue
        if line.strip() == "---":
            current = None
        elif current is not None:
            current.append(line)
    return {anchor: "\n".join(lines) for anchor, lines in entries.items()}


def _blocks(entry: str) -> list[tuple[str, str]]:
    """The entry's bold-labelled blocks (`**What to do.** ...`) as (label, text)."""
    blocks: list[tuple[str, list[str]]] = []
    for line in entry.splitlines():
        label = _LABEL.match(line)
        if label:
            blocks.append((label.group(1).strip().lower(), [line]))
        elif line.startswith("#"):
            continue
        elif blocks:
            blocks[-1][1].append(line)
    return [(label, "\n".join(lines).strip()) for label, lines in blocks]


def runbook_entry(anchor: str, runbook: Path = RUNBOOK) -> str:
    """The entry's "what happened" and "what to do" text, as markdown ("" when not found).

    Its relative links are made absolute against the runbook's URL, so they open from the UI.
    """
    if not runbook.exists():
        return ""
    entry = _entries(str(runbook), runbook.stat().st_mtime).get(anchor, "")
    blocks = _blocks(entry)
    happened = [text for label, text in blocks if label.startswith(_HAPPENED)]
    to_do = [text for label, text in blocks if label.startswith("what to do")]
    page = runbook_link(anchor)
    text = "\n\n".join(happened[:1] + to_do)
    return _LINK.sub(lambda m: f"]({urljoin(page, m.group(1))})", text)
