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
    delimiter: str = ","
    refused: str | None = None


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


def ingest(source: SourceSpec, data_dir: Path, day: str, key: bytes) -> IngestResult:
    """Read, tag and pseudonymise every file of `source` for partition `day`."""
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
        try:
            table = _read(path, source, report)
        except (csv.Error, UnicodeDecodeError, pa.ArrowException) as exc:
            raise IngestError(
                f"file '{relative}': cannot be read as {source.format} ({exc})"
            ) from None
        table = _conform(table, source, report, day)
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
    return _read_csv(path, source, report)


def _read_csv(path: Path, source: SourceSpec, report: FileReport) -> pa.Table:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"file '{path}': cannot be read ({exc})") from None
    data = data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark says UTF-8: harmless
    if not data.strip():
        report.empty = True
        return _no_rows()
    refusal = _unreadable(data)
    if refusal:
        return _refused(data, refusal, report)
    data, bad_lines = _decode(data, report)
    header_line = next(line for line in data.split(b"\n") if line.strip())
    header = next(csv.reader([header_line.decode("utf-8").rstrip("\r")]))
    delimiter = ","
    if not {source.file_column(name) for name in header} & set(source.columns):
        delimiter = _other_delimiter(header_line, source) or ","
        header = next(csv.reader([header_line.decode("utf-8").rstrip("\r")], delimiter=delimiter))

    invalid: list[str] = []

    def on_invalid(row) -> str:
        invalid.append(row.text)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise IngestError(f"file '{path}': not a readable CSV file ({exc})") from None

    # Source line numbers of the parsed rows (the header is line 1). When every line is one
    # record the numbering is direct; otherwise (rejected rows, blank lines, quoted newlines)
    # the records are walked to find the line each one starts on.
    good_lines: list[int] | range = range(2, table.num_rows + 2)
    bad_records: list[tuple[int, list[str]]] = []
    physical = data.count(b"\n") + (not data.endswith(b"\n"))
    if invalid or physical != table.num_rows + 1:
        walked = _walk_records(data, delimiter, len(header))
        if walked is not None and len(walked[0]) == table.num_rows:
            good_lines, bad_records = walked
    errors: list[str | None] = [bad_lines.get(n) for n in good_lines] if bad_lines else []
    errors = _mark_repeated_header(table, header, errors)
    if delimiter != ",":
        problem = (
            f"delimiter: fields are separated by {_name(delimiter)}, not commas "
            "(the file was exported with another delimiter)"
        )
        errors = [problem] * table.num_rows
        report.delimiter = delimiter
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


def _no_rows() -> pa.Table:
    return pa.table({SOURCE_ROW: pa.array([], pa.int64()), INGEST_ERROR: pa.array([], pa.string())})


def _unreadable(data: bytes) -> str | None:
    """Why a file cannot be read as CSV text at all, or None."""
    nul = data.find(b"\x00")
    if nul >= 0:
        return f"binary: the file holds NUL bytes (first at byte {nul}); it is not a CSV text file"
    header = data.lstrip(b"\r\n").split(b"\n", 1)[0]
    try:
        header.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"encoding: the header line is not UTF-8 text (invalid byte at position {exc.start})"
    if b"\r" in header.rstrip(b"\r"):
        return (
            "line_endings: a bare carriage return (CR) inside the header line splits it; "
            "the file's line endings are damaged"
        )
    return None


def _refused(data: bytes, problem: str, report: FileReport) -> pa.Table:
    """A file that cannot be parsed: one row per non-empty line after the first, carrying the
    problem (no values are kept: the text may hold personal data; the file stays in landing)."""
    lines = [n for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()][1:]
    report.refused = problem
    return pa.table(
        {
            SOURCE_ROW: pa.array(lines, pa.int64()),
            INGEST_ERROR: pa.array([problem] * len(lines), pa.string()),
        }
    )


def _decode(data: bytes, report: FileReport) -> tuple[bytes, dict[int, str]]:
    """Replace bytes that are not UTF-8, noting the problem per line."""
    bad_lines: dict[int, str] = {}
    try:
        data.decode("utf-8")
        return data, bad_lines
    except UnicodeDecodeError:
        pass
    fixed = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
            fixed.append(line)
        except UnicodeDecodeError as exc:
            bad_lines[number] = f"encoding: invalid UTF-8 byte at position {exc.start}"
            fixed.append(line.decode("utf-8", errors="replace").encode("utf-8"))
    report.encoding_errors = len(bad_lines)
    return b"\n".join(fixed), bad_lines


DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "pipes"}


def _name(delimiter: str) -> str:
    return DELIMITERS.get(delimiter, repr(delimiter))


def _other_delimiter(header_line: bytes, source: SourceSpec) -> str | None:
    """The delimiter that splits the header into declared column names, when commas do not."""
    text = header_line.decode("utf-8").rstrip("\r")
    for delimiter in DELIMITERS:
        names = next(csv.reader([text], delimiter=delimiter))
        if len(names) > 1 and {source.file_column(n) for n in names} & set(source.columns):
            return delimiter
    return None


def _walk_records(
    data: bytes, delimiter: str, width: int
) -> tuple[list[int], list[tuple[int, list[str]]]] | None:
    """The line each record starts on, quote-aware: (lines of well-formed records, (line,
    fields) of records with the wrong number of fields). None if the text defeats the reader."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter)
    good: list[int] = []
    bad: list[tuple[int, list[str]]] = []
    previous = 0
    header_seen = False
    try:
        for fields in reader:
            start, previous = previous + 1, reader.line_num
            if not fields:
                continue
            if not header_seen:
                header_seen = True
            elif len(fields) == width:
                good.append(start)
            else:
                bad.append((start, fields))
    except csv.Error:
        return None
    return good, bad


def _mark_repeated_header(table: pa.Table, header: list[str], errors: list) -> list:
    """Rows that repeat the header line: two files joined into one. Fails the whole file."""
    if table.num_rows == 0 or not header:
        return errors
    same = None
    for name in header:
        equal = pc.fill_null(pc.equal(table[name], name), False)
        same = equal if same is None else pc.and_(same, equal)
    if not pc.any(same).as_py():
        return errors
    errors = errors or [None] * table.num_rows
    problem = "repeated_header: the header line appears again inside the file (two files joined?)"
    for i in np.flatnonzero(same.to_numpy(zero_copy_only=False)):
        errors[i] = problem
    return errors


def _malformed(
    records: list[tuple[int, list[str]]], header: list[str], bad_lines: dict
) -> pa.Table:
    """Rows with the wrong number of fields, kept positionally so nothing is lost."""
    columns: dict[str, list] = {name: [] for name in header}
    numbers, errors = [], []
    for number, fields in records:
        for i, name in enumerate(header):
            columns[name].append(fields[i] if i < len(fields) and fields[i] != "" else None)
        numbers.append(number)
        problem = f"row_format: {len(fields)} fields where the header has {len(header)}"
        errors.append("; ".join(filter(None, [bad_lines.get(number), problem])))
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    table = table.append_column(SOURCE_ROW, pa.array(numbers, pa.int64()))
    return table.append_column(INGEST_ERROR, pa.array(errors, pa.string()))


def _conform(table: pa.Table, source: SourceSpec, report: FileReport, day: str) -> pa.Table:
    """Name the file's columns as the spec does (`rename`, `prefix`); keep declared columns in
    spec order; add missing ones empty; drop undeclared ones; fill a partition-dated source's
    date column with the partition day."""
    names = {
        source.file_column(c): c for c in table.column_names if c not in (SOURCE_ROW, INGEST_ERROR)
    }
    present = set(names)
    filled = set() if source.file_dated or source.static else {source.date_column}
    report.missing_columns = [c for c in source.columns if c not in present | filled]
    report.undeclared_columns = sorted(names[c] for c in present - set(source.columns))
    columns = {}
    for name in source.columns:
        if name in filled:
            columns[name] = pa.array([day] * table.num_rows, pa.string())
        elif name in present:
            columns[name] = table[names[name]]
        else:
            columns[name] = pa.nulls(table.num_rows, pa.string())
    columns[SOURCE_ROW] = table[SOURCE_ROW]
    errors = table[INGEST_ERROR]
    if report.missing_columns and not report.refused:
        missing = ", ".join(report.missing_columns)
        problem = pa.scalar(f"required_column: column '{missing}' is missing from the file")
        errors = pc.if_else(
            pc.is_null(errors), problem, pc.binary_join_element_wise(errors, problem, "; ")
        )
    columns[INGEST_ERROR] = errors
    return pa.table(columns)
