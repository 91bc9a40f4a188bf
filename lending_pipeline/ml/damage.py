"""The bad-file contract: every kind of damage a landing file can carry, and what the pipeline
does with it (refuse the file, quarantine the rows, or accept).

`DAMAGES` is the single source of the table in docs/spec.md ("What happens to a bad file",
`damage_table()`) and of the tests that hold the pipeline to it, for every source of every
shipped spec: `apply()` damages one landing file of a source the way a kind says, choosing the
column from the spec (a numeric column with a lower bound for `negative`, a date column for
`ancient_date`, ...).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lending_pipeline.spec import ColumnSpec, SourceSpec

Rows = list[list[str | None]]
REFUSE, QUARANTINE, ACCEPT = "refuse the file", "quarantine the rows", "accept"
DAMAGED_ROW = 1  # row-level damage hits the second data row


@dataclass(frozen=True)
class Damage:
    kind: str
    family: str  # structural, row level or harmless
    outcome: str  # REFUSE, QUARANTINE or ACCEPT
    rules: tuple[str, ...]  # the rule(s) the refusal or quarantine names (any of them)
    what: str
    column: Callable[[SourceSpec, str], str | None] | None = None  # picks the damaged column
    table: Callable[[list[str], Rows, str | None], tuple[list[str], Rows]] | None = None
    raw: Callable[[bytes], bytes] | None = None  # byte-level damage (CSV unless `any_format`)
    any_format: bool = False
    parquet_rules: tuple[str, ...] = ()  # when a Parquet file is refused differently
    note: str = ""

    def applies_to(self, source: SourceSpec, entity_key: str) -> bool:
        if self.raw is not None and not self.any_format and source.format != "csv":
            return False
        return self.column is None or self.column(source, entity_key) is not None

    def quarantined_rows(self, rows: int) -> int | None:
        """Rows the damage sends to quarantine, when it quarantines a known number."""
        if self.outcome != QUARANTINE:
            return None
        return {"all_null_column": rows, "duplicate_keys": 2}.get(self.kind, 1)


# Column pickers: the first column of the source that the damage can hit, or None.


def _columns(source: SourceSpec, key: str, keep: Callable[[str, ColumnSpec], bool]) -> str | None:
    return next((n for n, c in source.columns.items() if n not in source.key and keep(n, c)), None)


def _required(source: SourceSpec, key: str) -> str | None:
    return _columns(source, key, lambda n, c: not c.nullable and not c.pii)


def _numeric(source: SourceSpec, key: str) -> str | None:
    return _columns(source, key, lambda n, c: c.dtype in ("int", "float") and not c.allowed)


def _float(source: SourceSpec, key: str) -> str | None:
    return _columns(source, key, lambda n, c: c.dtype == "float" and not c.allowed)


def _bounded_below(source: SourceSpec, key: str) -> str | None:
    return _columns(
        source, key, lambda n, c: c.dtype in ("int", "float") and c.min is not None and c.min >= 0
    )


def _bounded_above(source: SourceSpec, key: str) -> str | None:
    return _columns(source, key, lambda n, c: c.dtype in ("int", "float") and c.max is not None)


def _allowed(source: SourceSpec, key: str) -> str | None:
    return _columns(source, key, lambda n, c: c.allowed is not None and c.dtype == "category")


def _text(source: SourceSpec, key: str) -> str | None:
    """Free text, else any non-PII text column (restricted text names `allowed_values`)."""
    free = [
        n
        for n, c in source.columns.items()
        if c.dtype in ("string", "category") and not c.pii and c.allowed is None
    ]
    return next(iter(free), None) or _columns(
        source, key, lambda n, c: c.dtype in ("string", "category") and not c.pii
    )


def _date(source: SourceSpec, key: str) -> str | None:
    return source.date_column


def _key(source: SourceSpec, key: str) -> str | None:
    return source.key[0]


# Table-level damage: (header, rows, column) -> (header, rows).


def _set(value: str | None, every_row: bool = False):
    def damage(header: list[str], rows: Rows, column: str | None) -> tuple[list[str], Rows]:
        i = header.index(column)
        for r in range(len(rows)) if every_row else [DAMAGED_ROW]:
            rows[r][i] = value
        return header, rows

    return damage


def _drop(header, rows, column):
    i = header.index(column)
    return header[:i] + header[i + 1 :], [row[:i] + row[i + 1 :] for row in rows]


def _rename(header, rows, column):
    return [f"{h}_v2" if h == column else h for h in header], rows


def _extra(header, rows, column):
    return [*header, "notes_internal"], [[*row, "x"] for row in rows]


def _reorder(header, rows, column):
    order = list(reversed(range(len(header))))
    return [header[i] for i in order], [[row[i] for i in order] for row in rows]


def _shuffle(header, rows, column):
    random.Random(5).shuffle(rows)
    return header, rows


def _duplicate(header, rows, column):
    return header, [*rows, list(rows[DAMAGED_ROW])]


def _empty_rows(header, rows, column):
    return header, []


def _pad(header, rows, column):
    numeric = [i for i, h in enumerate(header) if h == column]
    for row in rows:
        for i in numeric:
            if row[i] not in (None, ""):
                row[i] = f"  {row[i]} "
    return header, rows


# Byte-level damage.


def _truncate(data: bytes) -> bytes:
    body = data.rstrip(b"\n")
    last = body.rfind(b"\n")
    return body[: last + (len(body) - last) // 2]


def _binary(data: bytes) -> bytes:
    noise = random.Random(3).randbytes(len(data) or 512)
    return noise[:100] + b"\x00" + noise[100:]


def _latin1(data: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[1 + DAMAGED_ROW] = lines[1 + DAMAGED_ROW].replace(b",", b",\xe9\xff", 1)
    return b"\n".join(lines)


def _semicolons(data: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    out = io.StringIO()
    csv.writer(out, delimiter=";", lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def _repeat_header(data: bytes) -> bytes:
    lines = data.split(b"\n")
    return b"\n".join([*lines[:3], lines[0], *lines[3:]])


def _header_only(data: bytes) -> bytes:
    return data.split(b"\n", 1)[0] + b"\n"


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def _bom(data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data


def _quote_all(data: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


S, R, H = "structural", "row level", "harmless"
LONG = "x" * 5000

DAMAGES: list[Damage] = [
    Damage("missing_column", S, REFUSE, ("required_column",), "a declared column is absent",
           _required, _drop),
    Damage("renamed_column", S, REFUSE, ("required_column",),
           "a declared column arrives under another name", _required, _rename),
    Damage("empty_file", S, REFUSE, ("not_empty",), "zero bytes (Parquet: zero rows)",
           table=_empty_rows, note="accepted, with no rows, for a source with `required: false`"),
    Damage("header_only", S, REFUSE, ("not_empty",), "a header line and no rows",
           raw=_header_only,
           note="accepted, with no rows, for a source with `required: false`"),
    Damage("truncated", S, REFUSE, ("row_format",), "the transfer stopped mid-line",
           raw=_truncate, any_format=True, parquet_rules=("ingestion",)),
    Damage("bad_encoding", S, REFUSE, ("encoding",), "bytes that are not UTF-8 in a row",
           raw=_latin1),
    Damage("binary", S, REFUSE, ("binary",), "not text at all (random bytes, a zip)",
           raw=_binary, any_format=True, parquet_rules=("ingestion",)),
    Damage("wrong_delimiter", S, REFUSE, ("delimiter",), "fields separated by semicolons",
           raw=_semicolons),
    Damage("repeated_header", S, REFUSE, ("repeated_header",),
           "the header line again mid-file (two files joined)", raw=_repeat_header),
    Damage("duplicate_keys", S, REFUSE, ("unique_key",), "two rows with the same key",
           table=_duplicate),
    Damage("null_key", S, QUARANTINE, ("not_null",), "a row without its key", _key, _set(None)),
    Damage("all_null_column", S, QUARANTINE, ("not_null",),
           "a required column empty in every row (every row quarantined: the day fails)",
           _required, _set(None, every_row=True)),
    Damage("wrong_type", R, QUARANTINE, ("dtype",), "text in a numeric column", _numeric,
           _set("twelve")),
    Damage("negative", R, QUARANTINE, ("range",), "below a column's `min`", _bounded_below,
           _set("-1")),
    Damage("outlier", R, QUARANTINE, ("range",), "above a column's `max`", _bounded_above,
           _set("1e15")),
    Damage("infinity", R, QUARANTINE, ("dtype",), "`inf` in a float column", _float,
           _set("inf")),
    Damage("unknown_category", R, QUARANTINE, ("allowed_values",), "a value not in `allowed`",
           _allowed, _set("unheard_of")),
    Damage("null_required", R, QUARANTINE, ("not_null",), "empty value, column not nullable",
           _required, _set(None)),
    Damage("over_long_string", R, QUARANTINE, ("max_length", "allowed_values"),
           "5,000 characters in a text column (limit `max_length`, default 256)", _text,
           _set(LONG)),
    Damage("formula", R, QUARANTINE, ("text_content", "allowed_values"),
           "a spreadsheet formula (`=HYPERLINK(...)`) in a text column", _text,
           _set('=HYPERLINK("http://example.invalid")')),
    Damage("control_characters", R, QUARANTINE, ("text_content", "allowed_values"),
           "a control character (BEL) in a text column", _text, _set("abc\x07def")),
    Damage("future_date", R, QUARANTINE, ("not_in_future", "in_partition"),
           "a date after today", _date, _set("2199-01-01")),
    Damage("unparseable_date", R, QUARANTINE, ("dtype",), "`2025-13-45`", _date,
           _set("2025-13-45")),
    Damage("ancient_date", R, QUARANTINE, ("date_range", "in_partition"),
           "a placeholder date (1899-12-31) before the column's `earliest`", _date,
           _set("1899-12-31")),
    Damage("crlf", H, ACCEPT, (), "Windows line endings", raw=_crlf),
    Damage("bom", H, ACCEPT, (), "a UTF-8 byte-order mark", raw=_bom),
    Damage("reordered_columns", H, ACCEPT, (), "columns in another order", table=_reorder),
    Damage("quoted_fields", H, ACCEPT, (), "every field quoted", raw=_quote_all),
    Damage("extra_column", H, ACCEPT, (),
           "an undeclared column (dropped at ingestion and reported by name)", table=_extra),
    Damage("padded_numbers", H, ACCEPT, (), "spaces around numbers", _numeric, _pad),
    Damage("shuffled_rows", H, ACCEPT, (), "rows in another order", table=_shuffle),
]  # fmt: skip
BY_KIND = {d.kind: d for d in DAMAGES}


def read_landing(path: Path, fmt: str) -> tuple[list[str], Rows]:
    """A landing file as a header and rows of text (None for empty values)."""
    if fmt == "parquet":
        table = pq.read_table(path)
        columns = [table[c].cast(pa.string()).to_pylist() for c in table.column_names]
        return list(table.column_names), [list(row) for row in zip(*columns, strict=True)]
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    return rows[0], [[v if v != "" else None for v in row] for row in rows[1:]]


def write_landing(path: Path, fmt: str, header: list[str], rows: Rows) -> None:
    if fmt == "parquet":
        data = {h: pa.array([row[i] for row in rows], pa.string()) for i, h in enumerate(header)}
        pq.write_table(pa.table(data), path)
        return
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    path.write_text(out.getvalue(), encoding="utf-8")


def apply(damage: Damage, path: Path, source: SourceSpec, entity_key: str) -> str | None:
    """Damage one landing file of `source` in place; returns the column hit (or None)."""
    column = damage.column(source, entity_key) if damage.column else None
    if damage.table is not None:
        header, rows = read_landing(path, source.format)
        header, rows = damage.table(header, rows, column)
        write_landing(path, source.format, header, rows)
    if damage.raw is not None:
        path.write_bytes(damage.raw(path.read_bytes()))
    if damage.kind == "empty_file" and source.format == "csv":
        path.write_bytes(b"")
    return column


def damage_table() -> str:
    """The Markdown table of docs/spec.md's "What happens to a bad file"."""
    lines = [
        "| damage | kind | what the file holds | the pipeline | rule named |",
        "|---|---|---|---|---|",
    ]
    for d in DAMAGES:
        outcome = d.outcome + (f" ({d.note})" if d.note else "")
        rules = " or ".join(f"`{r}`" for r in d.rules) or "—"
        if d.parquet_rules:
            rules += " (Parquet: the step `raw_<source>` fails, `ingestion_failure`)"
        lines.append(f"| `{d.kind}` | {d.family} | {d.what} | {outcome} | {rules} |")
    return "\n".join(lines)
