"""Two products in one Dagster instance: own asset keys, warehouse, MLflow store and model; a
failure in one leaves the other untouched."""

import datetime as dt
import json

import dagster as dg
import pyarrow.parquet as pq

from lending_pipeline import product_locations
from lending_pipeline.definitions import DAILY_JOB
from lending_pipeline.defs.automation import CHECK_FAILURE_SENSOR
from lending_pipeline.ml import tracking
from lending_pipeline.ml.alerts import alerts_path
from lending_pipeline.ml.damage import BY_KIND, apply
from lending_pipeline.ml.synth import generate_consumer_loans, partition_path
from lending_pipeline.products import load_products
from lending_pipeline.runs import run_partition, run_training, summarize, tick_sensor
from lending_pipeline.spec import load_spec
from lending_pipeline_tests.conftest import PII_KEY
from lending_pipeline_tests.products.conftest import AS_OF, DAYS, NAMES, START, TRAIN_CONFIG

DAMAGED_DAY = (START + dt.timedelta(days=DAYS - 1)).isoformat()


def test_two_products_materialize_train_and_fail_apart(products_file, instance, monkeypatch):
    monkeypatch.setenv("LENDING_PII_KEY", PII_KEY)
    products = load_products()
    good, bad = (products.get(name) for name in NAMES)
    for seed, product in enumerate((good, bad)):
        spec = load_spec(product.spec_path)
        generate_consumer_loans(
            spec,
            product.data_dir,
            START,
            DAYS,
            300,
            seed=30 + seed,
            as_of=dt.date.fromisoformat(AS_OF),
        )
    bad_spec = load_spec(bad.spec_path)
    source = bad_spec.source_by_name["applications"]
    apply(
        BY_KIND["duplicate_keys"],
        partition_path(bad.data_dir, source, DAMAGED_DAY),
        source,
        "application_id",
    )

    defs = {name: getattr(product_locations, name) for name in NAMES}
    for name in NAMES:
        keys = defs[name].resolve_job_def(DAILY_JOB).asset_layer.executable_asset_keys
        assert keys and all(key.path[0] == name for key in keys)
    days = [(START + dt.timedelta(days=offset)).isoformat() for offset in range(DAYS)]
    runs = {name: [run_partition(defs[name], instance, day) for day in days] for name in NAMES}

    assert all(run.success and not run.failed_checks for run in runs[good.name])
    failed = [run.partition for run in runs[bad.name] if run.failed_checks or not run.success]
    assert failed == [DAMAGED_DAY]
    features = dg.AssetKey([good.name, "applicant_features"])
    materialized = instance.get_materialized_partitions(features)
    assert materialized == set(days)
    assert DAMAGED_DAY not in instance.get_materialized_partitions(
        dg.AssetKey([bad.name, "applicant_features"])
    )
    for product in (good, bad):  # each product's warehouse, laid out as a single product's
        stored = product.data_dir / "warehouse" / "applicant_features" / f"{days[0]}.parquet"
        assert pq.ParquetFile(stored).metadata.num_rows > 0
    for name in NAMES:  # each product's alerts go to its own data dir, naming its own asset
        tick_sensor(defs[name], instance, CHECK_FAILURE_SENSOR, json.dumps({"last_id": 0}))
    alerts = [json.loads(line) for line in alerts_path(bad.data_dir).read_text().splitlines()]
    assert alerts
    assert {(a["asset"], a["partition"]) for a in alerts} == {
        (f"{bad.name}/validated_applications", DAMAGED_DAY)
    }
    assert not alerts_path(good.data_dir).exists()
    assert not (products_file.parent / "shared").exists()

    trained = {
        name: summarize(run_training(defs[name], instance, TRAIN_CONFIG, package=False))
        for name in NAMES
    }
    assert trained[good.name].success, trained[good.name].messages
    refused = trained[bad.name]
    assert not refused.success and refused.failed_steps == ["training_set"]
    assert DAMAGED_DAY in " ".join(p.line() for p in refused.problems)

    from lending_pipeline.defs.resources import MlflowTracking

    config = MlflowTracking().config(good.name)
    assert config.registered_model == f"{good.name}_pd"
    assert config.experiment == f"lending_pipeline.{good.name}"
    assert str(good.data_dir) in config.tracking_uri
    assert tracking.alias_version(config, "champion") is not None
    assert tracking.alias_version(MlflowTracking().config(bad.name), "champion") is None


def test_the_products_workspace_loads_a_code_location_per_product(products_file, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lending_pipeline.product_locations import products_workspace

    workspace = products_workspace(tmp_path / "home")
    home = tmp_path / "home"
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "LENDING_PII_KEY": PII_KEY}
    validate = Path(sys.executable).parent / "dagster"
    done = subprocess.run(
        [str(validate), "definitions", "validate", "-w", str(workspace)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for name in NAMES:
        assert f"Validation successful for code location {name}" in output, output
