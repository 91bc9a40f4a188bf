"""Two products side by side: consumer-loan shaped specs under other names, one products file."""

import datetime as dt
import os
from pathlib import Path

import pytest
import yaml

from lending_pipeline.spec import default_spec_path

START = dt.date(2025, 2, 3)
DAYS = 12
AS_OF = "2025-09-01"
TRAIN_CONFIG = {
    "ops": {name: {"config": {"as_of": AS_OF}} for name in ("training_set", "candidate_model")}
}
NAMES = ("personal_loan", "car_loan")


def product_spec(folder: Path, name: str) -> Path:
    """The shipped consumer-loan spec under another name, sized for a test's twelve days."""
    data = yaml.safe_load(default_spec_path().read_text())
    data["name"] = name
    data["model"]["split"] = {"validation_days": 3, "test_days": 3}
    data["model"]["params"]["max_iter"] = 80
    data["gates"].update({"min_auc_margin_over_baseline": -0.1, "max_ece": 0.1})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def write_products(root: Path) -> Path:
    """A products file listing both products; their data dirs under `root/data/products`."""
    specs = root / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    listed = {name: {"spec": f"specs/{product_spec(specs, name).name}"} for name in NAMES}
    path = root / "products.yaml"
    path.write_text(yaml.safe_dump({"products": listed}, sort_keys=False))
    return path


@pytest.fixture
def products_file(tmp_path, monkeypatch):
    """A products file in force; the environment as it was afterwards (choosing a product sets
    variables in this process, as the CLI's `--product` does)."""
    saved = dict(os.environ)
    path = write_products(tmp_path)
    monkeypatch.setenv("LENDING_PRODUCTS", str(path))
    monkeypatch.setenv("LENDING_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.delenv("LENDING_PIPELINE_SPEC", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield path
    os.environ.clear()
    os.environ.update(saved)
