"""MLflow tracking and registry: runs, models, lineage tags, aliases, promotion history.

Models are saved with skops (not pickle); beyond skops' defaults, only the types listed in
`TRUSTED_TYPES` are trusted. The registry uses aliases: `champion` is the served model,
`previous` the one before it. Promotions are appended to a JSON-lines history.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"  # scored in the shadow of the champion, never answered


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str
    experiment: str
    artifact_location: str
    registered_model: str


def default_tracking_uri(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"


def history_path(data_dir: Path) -> Path:
    """The append-only promotion history (JSON lines)."""
    return data_dir / "registry" / "promotions.jsonl"


def registry_config(data_dir: Path, registered_model: str) -> TrackingConfig:
    """Enough configuration to read and move aliases: `MLFLOW_TRACKING_URI` or the default."""
    import os

    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(data_dir)
    return TrackingConfig(uri, "", "", registered_model)


def _client(config: TrackingConfig):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=config.tracking_uri)


def experiment_id(config: TrackingConfig) -> str:
    """The experiment's id, creating it with its artifact location on first use."""
    import mlflow

    if config.tracking_uri.startswith("sqlite:///"):
        Path(config.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    mlflow.set_tracking_uri(config.tracking_uri)
    client = _client(config)
    found = client.get_experiment_by_name(config.experiment)
    if found is not None:
        return found.experiment_id
    # Over HTTP the tracking server chooses where artifacts go (it serves them itself).
    location = config.artifact_location or None
    return client.create_experiment(config.experiment, artifact_location=location)


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server did not answer."""


def server_answers(uri: str, timeout: float = 3) -> bool:
    """Whether a tracking server answers its health check (True for a local store)."""
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def start_run(config: TrackingConfig, run_name: str, tags: dict[str, str]):
    """An MLflow run that always ends (FINISHED, or FAILED on an exception). When the tracking
    server stops answering, raises `TrackingUnavailable` naming it; the run it could not close
    stays RUNNING there until `close_orphaned_runs` (at the start of the next training)."""
    import mlflow

    try:
        experiment = experiment_id(config)
        with mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=tags) as run:
            yield run
    except Exception as exc:
        if server_answers(config.tracking_uri):
            raise
        raise TrackingUnavailable(
            f"the MLflow tracking server {config.tracking_uri} does not answer "
            f"({type(exc).__name__}); the run is not recorded as finished there and is closed "
            "as FAILED by the next training once the server is back"
        ) from exc


def close_orphaned_runs(config: TrackingConfig, finished: Callable[[str], bool]) -> list[str]:
    """Mark FAILED the experiment's runs still RUNNING whose Dagster run (tag `dagster_run_id`)
    has finished: they were left open by a run that lost the tracking server. Their ids."""
    client = _client(config)
    found = client.get_experiment_by_name(config.experiment)
    if found is None:
        return []
    closed = []
    running = client.search_runs(
        [found.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for run in running:
        owner = run.data.tags.get("dagster_run_id")
        if owner and finished(owner):
            reason = f"Dagster run {owner} ended without closing it (tracking server unreachable)"
            client.set_tag(run.info.run_id, "lending_closed_reason", reason)
            client.set_terminated(run.info.run_id, "FAILED")
            closed.append(run.info.run_id)
    return closed


@contextmanager
def resume_run(config: TrackingConfig, run_id: str):
    """Reopen a finished run to add evaluation results; yields the mlflow module."""
    import mlflow

    mlflow.set_tracking_uri(config.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        yield mlflow


# The model this process logged last, by (tracking URI, registered model, version). MLflow has
# checked, while logging, that the saved artifact loads under the trust list and predicts on the
# input example; a caller in the same process gets the very object that was serialized.
_LOGGED: dict[tuple[str, str, str], object] = {}

# Types outside skops' default trust that our pipelines hold. MLflow refuses to log a model
# with any other untrusted type, so a new estimator is trusted on purpose, here, or not at all.
TRUSTED_TYPES = [
    "functools.partial",
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


def log_model(config: TrackingConfig, model, example: pd.DataFrame, tags: dict[str, str]):
    """Log the model (skops, signature, input example) and register it; the tags go on both the
    logged model and the new version."""
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature

    signature = infer_signature(example, model.predict_proba(example)[:, 1])
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example.head(3),
        registered_model_name=config.registered_model,
        tags=tags,
        serialization_format="skops",
        skops_trusted_types=TRUSTED_TYPES,
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", "skops"],
    )
    version = str(info.registered_model_version)
    _LOGGED.clear()
    _LOGGED[(config.tracking_uri, config.registered_model, version)] = model
    return version, info.model_uri


def load_model(config: TrackingConfig, version: str):
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(config.tracking_uri)
    return mlflow.sklearn.load_model(f"models:/{config.registered_model}/{version}")


def load_saved(path: Path):
    """A saved MLflow scikit-learn model from its directory. A skops file is loaded directly
    under `TRUSTED_TYPES` (what MLflow does, without its import and environment checks: about
    4 s of a serving worker's start); any other format through MLflow."""
    import yaml

    flavor = yaml.safe_load((path / "MLmodel").read_text(encoding="utf-8"))["flavors"]["sklearn"]
    if flavor.get("serialization_format") == "skops":
        import skops.io

        return skops.io.load(path / flavor["pickled_model"], trusted=TRUSTED_TYPES)
    import mlflow.sklearn

    return mlflow.sklearn.load_model(str(path))


def logged_or_load(config: TrackingConfig, version: str):
    """The model of `version`: the object this process logged as it, else loaded (`load_model`)."""
    logged = _LOGGED.get((config.tracking_uri, config.registered_model, version))
    return logged if logged is not None else load_model(config, version)


def alias_version(config: TrackingConfig, alias: str) -> str | None:
    """The model version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(
            _client(config).get_model_version_by_alias(config.registered_model, alias).version
        )
    except MlflowException:
        return None


def version_tags(config: TrackingConfig, version: str) -> dict[str, str]:
    return dict(_client(config).get_model_version(config.registered_model, version).tags)


def version_run(config: TrackingConfig, version: str):
    """The MLflow run that logged a model version (params, metrics, tags)."""
    client = _client(config)
    return client.get_run(client.get_model_version(config.registered_model, version).run_id)


def promote(config: TrackingConfig, version: str) -> str | None:
    """Point `champion` at `version`; the old champion keeps `previous`. Returns the old one."""
    client = _client(config)
    old = alias_version(config, CHAMPION)
    if old == version:
        return old
    if old is not None:
        client.set_registered_model_alias(config.registered_model, PREVIOUS, old)
    client.set_registered_model_alias(config.registered_model, CHAMPION, version)
    return old


def set_challenger(config: TrackingConfig, version: str | None) -> None:
    """Point `challenger` at `version`, or remove the alias (None)."""
    client = _client(config)
    if version is None:
        if alias_version(config, CHALLENGER) is not None:
            client.delete_registered_model_alias(config.registered_model, CHALLENGER)
        return
    client.set_registered_model_alias(config.registered_model, CHALLENGER, version)


def append_history(path: Path, entry: dict) -> None:
    """Append one entry to the append-only promotion history (JSON lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **entry}
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
