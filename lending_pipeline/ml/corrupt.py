"""Corrupt landing files on purpose: the bad inputs the validation stage must catch.

Each function rewrites one CSV landing file in place. They serve the tests and
`lending-pipeline generate --corrupt KIND`, so an on-call engineer can rehearse a failure.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

SHARE = 0.1  # share of rows damaged by row-level corruptions


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    return rows[0], rows[1:]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _damaged(rows: list) -> range:
    return range(0, len(rows), max(1, round(1 / SHARE)))


def _set(path: Path, column: str, value: str, every_row: bool = False) -> None:
    header, rows = _read(path)
    i = header.index(column)
    for r in range(len(rows)) if every_row else _damaged(rows):
        rows[r][i] = value
    _write(path, header, rows)


def missing_column(path: Path, column: str) -> None:
    header, rows = _read(path)
    i = header.index(column)
    _write(path, header[:i] + header[i + 1 :], [row[:i] + row[i + 1 :] for row in rows])


def wrong_dtype(path: Path, column: str) -> None:
    _set(path, column, "not-a-number")


def negative_value(path: Path, column: str) -> None:
    _set(path, column, "-5000")


def out_of_range(path: Path, column: str) -> None:
    _set(path, column, "1000000000")


def unknown_category(path: Path, column: str) -> None:
    _set(path, column, "unknown_value")


def future_dates(path: Path, column: str) -> None:
    _set(path, column, "2099-01-01")


def all_null_column(path: Path, column: str) -> None:
    _set(path, column, "", every_row=True)


def duplicate_keys(path: Path, column: str | None = None) -> None:
    header, rows = _read(path)
    _write(path, header, rows + [list(rows[r]) for r in _damaged(rows)])


def empty_file(path: Path, column: str | None = None) -> None:
    path.write_bytes(b"")


def truncated_csv(path: Path, column: str | None = None) -> None:
    """Cut the file in the middle of its last line, as an interrupted transfer would."""
    data = path.read_bytes().rstrip(b"\n")
    last = data.rfind(b"\n")
    path.write_bytes(data[: last + (len(data) - last) // 2])


def non_utf8(path: Path, column: str | None = None) -> None:
    """Latin-1 bytes in some rows, as from a mis-encoded export."""
    lines = path.read_bytes().split(b"\n")
    for r in _damaged(lines[1:-1]):
        lines[r + 1] = lines[r + 1].replace(b",", b",\xe9\xff", 1)
    path.write_bytes(b"\n".join(lines))


CORRUPTIONS: dict[str, Callable[[Path, str | None], None]] = {
    "missing_column": missing_column,
    "wrong_dtype": wrong_dtype,
    "negative_value": negative_value,
    "out_of_range": out_of_range,
    "unknown_category": unknown_category,
    "future_dates": future_dates,
    "all_null_column": all_null_column,
    "duplicate_keys": duplicate_keys,
    "empty_file": empty_file,
    "truncated_csv": truncated_csv,
    "non_utf8": non_utf8,
}


def corrupt(path: Path, kind: str, column: str | None = None) -> None:
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{kind}' (choose from {', '.join(CORRUPTIONS)})")
    CORRUPTIONS[kind](path, column)
