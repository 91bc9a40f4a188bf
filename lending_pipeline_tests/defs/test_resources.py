"""The partitioned Parquet IO manager: storage, and the in-memory hand-over within one run."""

import dagster as dg
import pandas as pd

from lending_pipeline.defs.resources import HAND_OVER_IN_MEMORY, PartitionedParquetIOManager


def run(tmp_path, hand_over: bool, replace_file: bool = False) -> dict:
    """Materialize `table` -> (`replace`) -> `reader`; returns the frames written and read."""
    seen = {}
    stored = tmp_path / "warehouse" / "table" / "all.parquet"

    @dg.asset(metadata={HAND_OVER_IN_MEMORY: True} if hand_over else None)
    def table() -> pd.DataFrame:
        seen["written"] = pd.DataFrame({"id": ["a", "b"], "value": [1.0, 2.0]})
        return seen["written"]

    @dg.asset(deps=[table])
    def replace() -> dict:
        if replace_file:  # another writer replaced the stored table meanwhile
            pd.DataFrame({"id": ["c"], "value": [3.0]}).to_parquet(stored, index=False)
        return {}

    @dg.asset(deps=[replace])
    def reader(table: pd.DataFrame) -> dict:
        seen["read"] = table
        return {}

    result = dg.materialize(
        [table, replace, reader],
        resources={"io_manager": PartitionedParquetIOManager(data_dir=str(tmp_path))},
    )
    assert result.success
    assert stored.exists()
    return seen


def test_a_table_is_written_and_read_back(tmp_path):
    seen = run(tmp_path, hand_over=False)
    assert seen["read"] is not seen["written"]
    assert seen["read"]["value"].tolist() == [1.0, 2.0]


def test_a_hand_over_table_is_stored_and_reaches_the_next_step_from_memory(tmp_path):
    seen = run(tmp_path, hand_over=True)
    assert seen["read"] is seen["written"]
    stored = pd.read_parquet(tmp_path / "warehouse" / "table" / "all.parquet")
    assert stored["value"].tolist() == [1.0, 2.0]


def test_a_hand_over_table_replaced_on_disk_is_read_from_disk(tmp_path):
    seen = run(tmp_path, hand_over=True, replace_file=True)
    assert seen["read"]["id"].tolist() == ["c"]
