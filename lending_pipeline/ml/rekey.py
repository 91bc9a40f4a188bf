"""Re-keying the warehouse after a pseudonymisation key rotation.

Every Parquet file under `<data dir>/warehouse` that holds a PII column of the spec has each
pseudonym lifted to the active key's generation (`Keyring.rekey`): what ingesting the same
landing files under the active key would have written, so joins across the rotation keep
working. A file is rewritten atomically, and only when something changed; a file that another
writer replaced meanwhile is read again. Running it twice changes nothing the second time.
A value in a PII column that is not a pseudonym leaves its file untouched and is reported by
file and column (never the value).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lending_pipeline.ml.keyring import Keyring
from lending_pipeline.spec import PipelineSpec

_ATTEMPTS = 5  # reads of a file that keeps being replaced while it is re-keyed


class RekeyError(RuntimeError):
    """The warehouse could not be re-keyed completely (the message names files and columns)."""


@dataclass
class RekeyReport:
    key_id: str
    files_checked: int = 0
    files_rewritten: int = 0
    values_rekeyed: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "key_id": self.key_id,
            "files_checked": self.files_checked,
            "files_rewritten": self.files_rewritten,
            "values_rekeyed": self.values_rekeyed,
            "problems": len(self.problems),
        }


def pii_columns(spec: PipelineSpec) -> set[str]:
    return {c for source in spec.sources for c in source.pii_columns}


def rekey_warehouse(data_dir: Path, spec: PipelineSpec, keyring: Keyring) -> RekeyReport:
    """Lift every pseudonym in the warehouse to the active key (one re-keying at a time)."""
    report = RekeyReport(keyring.active_id)
    warehouse = data_dir / "warehouse"
    if not warehouse.is_dir():
        return report
    columns = pii_columns(spec)
    with _exclusive(warehouse / ".rekey.lock"):
        for path in sorted(warehouse.rglob("*.parquet")):
            found = [c for c in pq.read_schema(path).names if c in columns]
            if not found:
                continue
            report.files_checked += 1
            _rekey_file(path, found, keyring, report, warehouse)
    return report


def _rekey_file(
    path: Path, columns: list[str], keyring: Keyring, report: RekeyReport, root: Path
) -> None:
    name = str(path.relative_to(root))
    for _ in range(_ATTEMPTS):
        before = _signature(path)
        table = pq.read_table(path)
        changed, problems = 0, []
        for column in columns:
            values, count, problem = _rekey_column(table[column], keyring)
            if problem:
                problems.append(f"{name}: column {column}: {problem}")
            elif count:
                index = table.schema.get_field_index(column)
                table = table.set_column(index, table.schema.field(index), values)
                changed += count
        if problems:
            report.problems += problems
            return
        if not changed:
            return
        tmp = path.with_name(path.name + ".rekey.tmp")
        pq.write_table(table, tmp)
        if _signature(path) != before:  # replaced while re-keyed: read it again
            tmp.unlink()
            continue
        os.replace(tmp, path)
        report.files_rewritten += 1
        report.values_rekeyed += changed
        return
    report.problems.append(f"{name}: kept changing while it was re-keyed; run the job again")


def _rekey_column(column: pa.ChunkedArray, keyring: Keyring) -> tuple[pa.Array, int, str | None]:
    """The column with each distinct pseudonym lifted, how many rows changed, or a problem."""
    array = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        if array.null_count == len(array):
            return array, 0, None
        return array, 0, f"holds {array.type} values, not pseudonyms"
    encoded = array.dictionary_encode()
    lifted, bad = [], 0
    for value in encoded.dictionary.to_pylist():
        try:
            lifted.append(keyring.rekey(value))
        except ValueError:
            bad += 1
            lifted.append(value)
    if bad:
        return array, 0, f"{bad} distinct value(s) are not pseudonyms of this keyring"
    result = pc.take(pa.array(lifted, array.type), encoded.indices)
    changed = pc.sum(pc.not_equal(result, array)).as_py() or 0
    return result, changed, None


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


class _exclusive:
    """An exclusive lock on a file for the duration of a `with` block (fails fast when held)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.handle = open(self.path, "a")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise RekeyError(f"another re-keying holds {self.path}: wait for it") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
