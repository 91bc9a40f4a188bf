"""Data and spec shared by the production-profile tests."""

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from lending_pipeline.ml.synth import generate_consumer_loans
from lending_pipeline.spec import default_spec_path, load_spec
from lending_pipeline_tests.conftest import PII_KEY

START = dt.date(2025, 2, 3)
DAYS = 8
PER_DAY = 300
AS_OF = "2025-09-01"
TRAIN_CONFIG = {
    "ops": {name: {"config": {"as_of": AS_OF}} for name in ("training_set", "candidate_model")}
}


def day(offset: int) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


@pytest.fixture
def small_spec(tmp_path, monkeypatch) -> Path:
    """A spec that trains quickly on eight days (3 validation, 2 test), set as the spec in
    force for this process and the processes it starts."""
    data = yaml.safe_load(default_spec_path().read_text())
    data["model"]["split"] = {"validation_days": 2, "test_days": 2}
    data["model"]["params"]["max_iter"] = 60
    data["gates"].update(
        {
            "min_auc_margin_over_baseline": -0.2,
            "max_ece": 0.2,
            "challenger_must_beat_champion": False,  # a retrain on the same days ties
        }
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("LENDING_PIPELINE_SPEC", str(path))
    return path


@pytest.fixture
def landed(tmp_path, small_spec, monkeypatch) -> Path:
    """Eight days of landing files in a fresh data dir (in force), and the PII key."""
    root = tmp_path / "data"
    spec = load_spec(small_spec)
    generate_consumer_loans(spec, root, START, DAYS, PER_DAY, seed=5, as_of=dt.date(2025, 9, 1))
    monkeypatch.setenv("LENDING_DATA_DIR", str(root))
    monkeypatch.setenv("LENDING_PII_KEY", PII_KEY)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


def warehouse_digests(data_dir: Path) -> dict[str, tuple[int, str]]:
    """Rows and a content digest of every Parquet partition in the warehouse."""
    import hashlib

    import pandas as pd

    found = {}
    for path in sorted((data_dir / "warehouse").rglob("*.parquet")):
        frame = pq.read_table(path).to_pandas()
        digest = hashlib.sha256(",".join(frame.columns).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
        found[str(path.relative_to(data_dir))] = (len(frame), digest.hexdigest())
    return found
