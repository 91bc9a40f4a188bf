"""Safe arithmetic expressions for derived features.

An expression is parsed with Python's `ast` and only an allow-list of nodes is accepted:
numbers, strings (for comparisons), column names, + - * / ** and unary minus, comparisons
(1.0 / 0.0, or NaN when a side is null), and the functions in `FUNCTIONS`. Nothing is ever
passed to `eval`, so a spec cannot run code. Evaluation is vectorised over NumPy arrays (pandas
Series are converted), the same for a whole table and for one application; division by zero and
other undefined results give NaN.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd


class ExpressionError(ValueError):
    """An expression that is not valid feature arithmetic."""


def _is_null(value):
    if not isinstance(value, np.ndarray):
        return value is None or value != value
    if value.dtype.kind == "f":
        return np.isnan(value)
    if value.dtype.kind == "M":
        return np.isnat(value)
    return pd.isna(value)


def _divide(numerator, denominator):
    """Division where a zero denominator gives NaN (undefined), not infinity."""
    result = np.true_divide(numerator, denominator)
    return np.where(np.isfinite(result), result, np.nan)


def _days_between(start, end):
    days = (
        np.asarray(end, "datetime64[ns]") - np.asarray(start, "datetime64[ns]")
    ) / np.timedelta64(1, "D")
    return np.floor(days)


def _coalesce(*values):
    out = values[0]
    for value in values[1:]:
        out = np.where(_is_null(out), value, out)
    return out


def _clip(value, low, high):
    return np.clip(value, low, high)


FUNCTIONS: dict[str, tuple[Callable, int, int]] = {
    # name: (function, min args, max args)
    "log1p": (lambda x: np.log1p(np.maximum(x, -1 + 1e-12)), 1, 1),
    "abs": (np.abs, 1, 1),
    "sqrt": (lambda x: np.sqrt(np.maximum(x, 0)), 1, 1),
    "min": (lambda a, b: np.fmin(a, b), 2, 2),
    "max": (lambda a, b: np.fmax(a, b), 2, 2),
    "clip": (_clip, 3, 3),
    "coalesce": (_coalesce, 2, 8),
    "days_between": (_days_between, 2, 2),
    "is_null": (lambda x: np.asarray(_is_null(x), dtype="float64"), 1, 1),
}

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: _divide,
    ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def parse(expression: str) -> ast.Expression:
    """Parse and check an expression; raise ExpressionError naming the offending part."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg}") from None
    for node in ast.walk(tree):
        _check_node(node)
    return tree


def _check_node(node: ast.AST) -> None:
    allowed = (
        ast.Expression,
        ast.BinOp,
        ast.UnaryOp,
        ast.USub,
        ast.UAdd,
        ast.Compare,
        ast.Name,
        ast.Load,
        ast.Constant,
        ast.Call,
        *_BINARY,
        *_COMPARE,
    )
    if not isinstance(node, allowed):
        raise ExpressionError(f"'{type(node).__name__}' is not allowed in a feature expression")
    if isinstance(node, ast.Constant) and not isinstance(node.value, int | float | str):
        raise ExpressionError(f"constant {node.value!r} is not allowed")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = getattr(node.func, "id", ast.unparse(node.func))
            raise ExpressionError(
                f"unknown function '{name}' (allowed: {', '.join(sorted(FUNCTIONS))})"
            )
        _, low, high = FUNCTIONS[node.func.id]
        if node.keywords or not low <= len(node.args) <= high:
            raise ExpressionError(f"{node.func.id}() takes {low}..{high} positional arguments")
    if isinstance(node, ast.Compare) and len(node.ops) != 1:
        raise ExpressionError("chained comparisons are not allowed")


def referenced_columns(expression: str) -> set[str]:
    """Column names an expression reads (function names excluded)."""
    tree = parse(expression)
    functions = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in functions}


def evaluate(expression: str, columns: Mapping, index: pd.Index) -> pd.Series:
    """Evaluate an expression over named columns; the result is a float Series on `index`."""
    return pd.Series(evaluate_array(expression, columns, len(index)), index=index)


def evaluate_array(expression: str, columns: Mapping, rows: int) -> np.ndarray:
    """Evaluate over columns (Series or arrays); float64, NaN where undefined or unknown.

    Training (whole tables) and scoring (one application) both come through here.
    """
    compiled = _compiled(expression)
    with np.errstate(all="ignore"):
        value = np.asarray(compiled(columns), dtype="float64")
    if value.shape != (rows,):
        value = np.broadcast_to(value, (rows,))
    return np.where(np.isfinite(value), value, np.nan)


@functools.lru_cache(maxsize=512)
def _parsed(expression: str) -> ast.Expression:
    return parse(expression)


@functools.lru_cache(maxsize=512)
def _compiled(expression: str) -> Callable[[Mapping], object]:
    """The checked expression as nested closures: the tree is walked once, not per call (on one
    application, walking it cost more than the arithmetic)."""
    return _compile(_parsed(expression).body)


def as_array(values) -> np.ndarray:
    """A column as NumPy: numbers as float64 (NaN for null), dates as datetime64, text as
    objects (None for null)."""
    if isinstance(values, np.ndarray):
        return values
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.to_numpy(dtype="datetime64[ns]")
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype="float64", na_value=np.nan)
    return series.to_numpy(dtype=object, na_value=None)


def _as_dates(left, right):
    """A text constant compared with a date column is read as a date."""
    for this, other in ((left, right), (right, left)):
        if isinstance(this, np.ndarray) and this.dtype.kind == "M" and isinstance(other, str):
            converted = np.datetime64(other, "ns")
            return (left, converted) if this is left else (converted, right)
    return left, right


def _compile(node: ast.AST) -> Callable[[Mapping], object]:
    if isinstance(node, ast.Constant):
        constant = node.value
        return lambda columns: constant
    if isinstance(node, ast.Name):
        name = node.id

        def column(columns: Mapping):
            if name not in columns:
                raise ExpressionError(f"unknown column '{name}'")
            return as_array(columns[name])

        return column
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand)
        return (lambda columns: -operand(columns)) if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        binary = _BINARY[type(node.op)]
        left, right = _compile(node.left), _compile(node.right)
        return lambda columns: binary(left(columns), right(columns))
    if isinstance(node, ast.Compare):
        compare = _COMPARE[type(node.ops[0])]
        left, right = _compile(node.left), _compile(node.comparators[0])

        def comparison(columns: Mapping):
            a, b = _as_dates(left(columns), right(columns))
            result = np.asarray(compare(a, b), dtype="float64")
            unknown = np.logical_or(_is_null(a), _is_null(b))
            return np.where(unknown, np.nan, result)  # a comparison with an unknown is unknown

        return comparison
    if isinstance(node, ast.Call):
        function = FUNCTIONS[node.func.id][0]
        arguments = [_compile(argument) for argument in node.args]
        return lambda columns: function(*(argument(columns) for argument in arguments))
    raise ExpressionError(f"'{type(node).__name__}' is not allowed")  # pragma: no cover
