"""Erasure of one applicant on request (right to erasure), without breaking the audit chain.

`erase_applicant` removes every row whose entity key (e.g. `application_id`) is the applicant's
from the landing files (the only place raw PII is kept) and from every warehouse Parquet file,
appends an `erasure` entry to the audit log (who, why, which data keys, how many rows; the
applicant only as a keyed hash), then destroys the applicant's data keys (`data_keys`): the
inputs of their decision entries become unreadable, while the entries themselves, their
ciphertext and the chain stay as written, so `audit verify` still passes. Every step can be run
again: a second run finds nothing left and records that.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lending_pipeline.ml import audit, data_keys
from lending_pipeline.spec import PipelineSpec

ERASURE = "erasure"
_ATTEMPTS = 5


class ErasureError(ValueError):
    """An erasure request that cannot be carried out as given (the message says why)."""


@dataclass
class ErasureReport:
    applicant_ref: str
    data_keys_destroyed: list[str] = field(default_factory=list)
    warehouse_rows: dict[str, int] = field(default_factory=dict)
    landing_rows: dict[str, int] = field(default_factory=dict)
    audit_seq: int | None = None

    def summary(self) -> dict:
        return {
            "applicant_ref": self.applicant_ref,
            "data_keys_destroyed": len(self.data_keys_destroyed),
            "warehouse_rows_removed": sum(self.warehouse_rows.values()),
            "warehouse_files_changed": len(self.warehouse_rows),
            "landing_rows_removed": sum(self.landing_rows.values()),
            "landing_files_changed": len(self.landing_rows),
            "audit_seq": self.audit_seq,
        }


def applicant_ref(audit_key: bytes, applicant: str) -> str:
    """The applicant as the log names them: a keyed hash (whoever holds the id and the audit key
    can confirm an erasure; the log alone does not list who was erased)."""
    return audit.hmac_hex(audit_key)(b"lending-erasure/v1\n" + applicant.encode())


def erase_applicant(
    spec: PipelineSpec,
    data_dir: Path,
    applicant: str,
    by: str,
    reason: str,
    store: audit.AuditStore,
    keys: data_keys.DataKeyStore,
    audit_key: bytes,
) -> ErasureReport:
    """Erase one applicant (the entity key's value): rows, then the audit entry, then keys."""
    applicant, by, reason = applicant.strip(), by.strip(), reason.strip()
    if not applicant:
        raise ErasureError("the applicant id is empty")
    if not by or not reason:
        raise ErasureError("say who asks (--by) and why (--reason)")
    report = ErasureReport(applicant_ref(audit_key, applicant))
    column = spec.entity.key
    report.landing_rows = _erase_landing(spec, data_dir, column, applicant)
    warehouse = data_dir / "warehouse"
    if warehouse.is_dir():
        for path in sorted(warehouse.rglob("*.parquet")):
            removed = _erase_parquet(path, column, applicant)
            if removed:
                report.warehouse_rows[str(path.relative_to(data_dir))] = removed
    key_ids = keys.key_ids(applicant)
    (entry,) = store.append(
        ERASURE,
        [
            {
                "applicant_ref": report.applicant_ref,
                "by": by,
                "reason": reason,
                "data_key_ids": key_ids,
                "entity_key": column,
                "landing_rows_removed": sum(report.landing_rows.values()),
                "warehouse_rows_removed": sum(report.warehouse_rows.values()),
                "files_changed": sorted(report.landing_rows) + sorted(report.warehouse_rows),
            }
        ],
    )
    report.audit_seq = entry.seq
    report.data_keys_destroyed = keys.destroy(applicant)
    store.checkpoint_head()
    return report


def _erase_landing(spec: PipelineSpec, data_dir: Path, column: str, applicant: str) -> dict:
    removed = {}
    for source in spec.sources:
        if column not in source.columns:
            continue
        pattern = source.files.replace("{date}", "*").replace("**", "*")
        for path in sorted(data_dir.glob(pattern)):
            if not path.is_file() or path.name.endswith(".tmp"):
                continue
            if source.format == "parquet":
                count = _erase_parquet(path, column, applicant)
            else:
                count = _erase_csv(path, column, applicant)
            if count:
                removed[str(path.relative_to(data_dir))] = count
    return removed


def _erase_csv(path: Path, column: str, applicant: str) -> int:
    """Drop the CSV records whose `column` is the applicant; other records are written back
    field for field (bytes that are not UTF-8 kept as they were)."""
    for _ in range(_ATTEMPTS):
        before = _signature(path)
        data = path.read_bytes()
        if applicant.encode() not in data:
            return 0
        text = data.decode("utf-8", errors="surrogateescape")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows or column not in rows[0]:
            return 0
        index = rows[0].index(column)
        kept = [rows[0]] + [r for r in rows[1:] if not (len(r) > index and r[index] == applicant)]
        removed = len(rows) - len(kept)
        if not removed:
            return 0
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\n").writerows(kept)
        if _replace(path, out.getvalue().encode("utf-8", errors="surrogateescape"), before):
            return removed
    raise ErasureError(f"{path} kept changing while the applicant was removed: run it again")


def _erase_parquet(path: Path, column: str, applicant: str) -> int:
    for _ in range(_ATTEMPTS):
        before = _signature(path)
        if column not in pq.read_schema(path).names:
            return 0
        table = pq.read_table(path)
        values = table[column]
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = pc.cast(values, pa.string())
        match = pc.fill_null(pc.equal(values, applicant), False)
        removed = pc.sum(match).as_py() or 0
        if not removed:
            return 0
        kept = table.filter(pc.invert(match))
        buffer = pa.BufferOutputStream()
        pq.write_table(kept, buffer)
        if _replace(path, buffer.getvalue().to_pybytes(), before):
            return removed
    raise ErasureError(f"{path} kept changing while the applicant was removed: run it again")


def _replace(path: Path, content: bytes, before: tuple[int, int]) -> bool:
    """Write `content` over `path` atomically, unless the file changed since `before`."""
    tmp = path.with_name(path.name + ".erase.tmp")
    tmp.write_bytes(content)
    if _signature(path) != before:
        tmp.unlink()
        return False
    os.replace(tmp, path)
    return True


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
