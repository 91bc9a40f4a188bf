"""Ingestion: read one source's landing files for one day, pseudonymise PII at the door.

Reading never drops a row. Every record of every file becomes one row, as text, with its origin
(`_source_file`, `_source_row`). Rows that cannot be read cleanly — bytes that are not UTF-8, a
wrong number of fields (a truncated or garbled line) — are kept with the problem in
`_ingest_error`, so validation can quarantine them by rule. Declared columns missing from a file
are added empty and reported; undeclared columns are dropped (they could hold personal data the
spec does not know about) and reported by name. PII columns are replaced by their keyed
pseudonyms before the table leaves this module.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lending_pipeline.ml.pii import pseudonymise
from lending_pipeline.spec import SourceSpec

SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
INGEST_ERROR = "_ingest_error"
LINEAGE_COLUMNS = [SOURCE_FILE, SOURCE_ROW, INGEST_ERROR]


class IngestError(RuntimeError):
    """A partition that cannot be ingested at all (no file, unreadable file)."""


@dataclass
class FileReport:
    path: str
    rows: int = 0
    empty: bool = False
    missing_columns: list[str] = field(default_factory=list)
    undeclared_columns: list[str] = field(default_factory=list)
    encoding_errors: int = 0
    malformed_rows: int = 0


@dataclass
class IngestResult:
    table: pa.Table
    files: list[FileReport]

    @property
    def rows(self) -> int:
        return self.table.num_rows


def find_files(source: SourceSpec, data_dir: Path, day: str) -> list[Path]:
    pattern = source.files_for(day)
    return sorted(p for p in data_dir.glob(pattern) if p.is_file() and not p.name.endswith(".tmp"))


def ingest(
    source: SourceSpec, data_dir: Path, day: str, key: bytes | Callable[[str], str]
) -> IngestResult:
    """Read, tag and pseudonymise every file of `source` for partition `day` (under `key`, or
    by a keyring's `pseudonymise`)."""
    paths = find_files(source, data_dir, day)
    if not paths and source.required:
        raise IngestError(
            f"source '{source.name}': no file matches '{source.files_for(day)}' "
            f"under {data_dir} for partition {day}"
        )
    tables, reports = [], []
    for path in paths:
        relative = str(path.relative_to(data_dir))
        report = FileReport(path=relative)
        table = _read(path, source, report)
        table = _conform(table, source, report)
        report.rows = table.num_rows
        table = table.append_column(SOURCE_FILE, pa.array([relative] * table.num_rows, pa.string()))
        tables.append(table)
        reports.append(report)
    table = pa.concat_tables(tables) if tables else _empty(source)
    for column in source.pii_columns:
        index = table.schema.get_field_index(column)
        table = table.set_column(index, column, pseudonymise(table[column], key))
    return IngestResult(table=table, files=reports)


def _empty(source: SourceSpec) -> pa.Table:
    columns = list(source.columns) + LINEAGE_COLUMNS
    types = {SOURCE_ROW: pa.int64()}
    return pa.table({c: pa.array([], types.get(c, pa.string())) for c in columns})


def _read(path: Path, source: SourceSpec, report: FileReport) -> pa.Table:
    if source.format == "parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"file '{path}': not a readable Parquet file ({exc})") from None
        columns = {}
        for name in table.column_names:
            column = table[name]
            if pa.types.is_floating(column.type):
                column = pc.if_else(pc.is_nan(column), None, column)
            columns[name] = column.cast(pa.string())
        table = pa.table(columns) if columns else pa.table({})
        rows = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))
        errors = pa.nulls(table.num_rows, pa.string())
        report.empty = table.num_rows == 0
        return table.append_column(SOURCE_ROW, rows).append_column(INGEST_ERROR, errors)
    return _read_csv(path, report)


def _read_csv(path: Path, report: FileReport) -> pa.Table:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"file '{path}': cannot be read ({exc})") from None
    bad_lines: dict[int, str] = {}
    try:
        data.decode("utf-8")
        lines = data[: data.find(b"\n") + 1 or len(data)].split(b"\n")
    except UnicodeDecodeError:
        lines = data.split(b"\n")
        fixed = []
        for number, line in enumerate(lines, start=1):
            try:
                line.decode("utf-8")
                fixed.append(line)
            except UnicodeDecodeError as exc:
                bad_lines[number] = f"encoding: invalid UTF-8 byte at position {exc.start}"
                fixed.append(line.decode("utf-8", errors="replace").encode("utf-8"))
        data = b"\n".join(fixed)
        lines = fixed
        report.encoding_errors = len(bad_lines)
    header_line = next((line for line in lines if line.strip()), None)
    if header_line is None and data.strip():
        lines = data.split(b"\n")
        header_line = next((line for line in lines if line.strip()), None)
    if header_line is None:
        report.empty = True
        return pa.table(
            {SOURCE_ROW: pa.array([], pa.int64()), INGEST_ERROR: pa.array([], pa.string())}
        )
    header = next(csv.reader([header_line.decode("utf-8").rstrip("\r")]))

    invalid: list[str] = []

    def on_invalid(row) -> str:
        invalid.append(row.text)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise IngestError(f"file '{path}': not a readable CSV file ({exc})") from None

    # Line numbers of the rows that parsed (the header is line 1). Only when rows were
    # rejected does this need a walk over the lines.
    good_lines: list[int] | range = range(2, table.num_rows + 2)
    bad_records: list[tuple[int, str]] = []
    if invalid:
        lines = data.split(b"\n")
        invalid_set = {text.rstrip("\r") for text in invalid}
        numbered = [n for n, line in enumerate(lines, start=1) if line.strip()][1:]
        good_lines = []
        for number in numbered:
            text = lines[number - 1].decode("utf-8").rstrip("\r")
            if text in invalid_set:
                bad_records.append((number, text))
            else:
                good_lines.append(number)
        if len(good_lines) != table.num_rows:  # quoted newlines: fall back to record order
            good_lines = range(2, table.num_rows + 2)
    errors = [bad_lines.get(n) for n in good_lines] if bad_lines else None
    table = table.append_column(SOURCE_ROW, pa.array(np.asarray(good_lines, dtype=np.int64)))
    error_column = (
        pa.array(errors, pa.string()) if errors else pa.nulls(table.num_rows, pa.string())
    )
    table = table.append_column(INGEST_ERROR, error_column)
    if bad_records:
        report.malformed_rows = len(bad_records)
        table = pa.concat_tables([table, _malformed(bad_records, header, bad_lines)])
    report.empty = table.num_rows == 0
    return table


def _malformed(records: list[tuple[int, str]], header: list[str], bad_lines: dict) -> pa.Table:
    """Rows with the wrong number of fields, kept positionally so nothing is lost."""
    columns: dict[str, list] = {name: [] for name in header}
    numbers, errors = [], []
    for number, text in records:
        fields = next(csv.reader([text]), [])
        for i, name in enumerate(header):
            columns[name].append(fields[i] if i < len(fields) and fields[i] != "" else None)
        numbers.append(number)
        problem = f"row_format: {len(fields)} fields where the header has {len(header)}"
        errors.append("; ".join(filter(None, [bad_lines.get(number), problem])))
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    table = table.append_column(SOURCE_ROW, pa.array(numbers, pa.int64()))
    return table.append_column(INGEST_ERROR, pa.array(errors, pa.string()))


def _conform(table: pa.Table, source: SourceSpec, report: FileReport) -> pa.Table:
    """Keep declared columns in spec order; add missing ones empty; drop undeclared ones."""
    present = set(table.column_names) - {SOURCE_ROW, INGEST_ERROR}
    report.missing_columns = [c for c in source.columns if c not in present]
    report.undeclared_columns = sorted(present - set(source.columns))
    columns = {}
    for name in source.columns:
        columns[name] = table[name] if name in present else pa.nulls(table.num_rows, pa.string())
    columns[SOURCE_ROW] = table[SOURCE_ROW]
    errors = table[INGEST_ERROR]
    if report.missing_columns:
        missing = ", ".join(report.missing_columns)
        problem = pa.scalar(f"required_column: column '{missing}' is missing from the file")
        errors = pc.if_else(
            pc.is_null(errors), problem, pc.binary_join_element_wise(errors, problem, "; ")
        )
    columns[INGEST_ERROR] = errors
    return pa.table(columns)
