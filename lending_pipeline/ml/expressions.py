"""Safe arithmetic expressions for derived features.

An expression is parsed with Python's `ast` and only an allow-list of nodes is accepted:
numbers, strings (for comparisons), column names, + - * / ** and unary minus, comparisons
(1.0 / 0.0, or NaN when a side is null), and the functions in `FUNCTIONS`. Nothing is ever
passed to `eval`, so a spec cannot run code. Evaluation is vectorised over pandas Series;
division by zero and other undefined results give NaN.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd


class ExpressionError(ValueError):
    """An expression that is not valid feature arithmetic."""


def _divide(numerator, denominator):
    """Division where a zero denominator gives NaN (undefined), not infinity."""
    try:
        result = operator.truediv(numerator, denominator)
    except ZeroDivisionError:
        return np.nan
    if isinstance(result, pd.Series):
        return result.where(np.isfinite(result.astype("float64")))
    return result if np.isfinite(result) else np.nan


def _days_between(start, end):
    return (pd.to_datetime(end) - pd.to_datetime(start)).dt.days.astype("float64")


def _coalesce(*values):
    out = values[0]
    for value in values[1:]:
        out = out.where(out.notna(), value) if isinstance(out, pd.Series) else out
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
    "is_null": (lambda x: x.isna().astype("float64"), 1, 1),
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


def evaluate(expression: str, columns: Mapping[str, pd.Series], index: pd.Index) -> pd.Series:
    """Evaluate an expression over named columns; the result is a float Series on `index`."""
    tree = parse(expression)
    with np.errstate(all="ignore"):
        value = _eval(tree.body, columns)
    if not isinstance(value, pd.Series):
        value = pd.Series(value, index=index)
    value = value.astype("float64")
    return value.where(np.isfinite(value))


def _eval(node: ast.AST, columns: Mapping[str, pd.Series]):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in columns:
            raise ExpressionError(f"unknown column '{node.id}'")
        series = columns[node.id]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
            return series.astype("float64")
        return series
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, columns)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, columns), _eval(node.right, columns))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, columns)
        right = _eval(node.comparators[0], columns)
        result = _COMPARE[type(node.ops[0])](left, right)
        if not isinstance(result, pd.Series):
            return float(result)
        result = result.astype("float64")
        for side in (left, right):  # a comparison with an unknown value is unknown
            if isinstance(side, pd.Series):
                result = result.mask(side.isna())
        return result
    if isinstance(node, ast.Call):
        function = FUNCTIONS[node.func.id][0]
        return function(*(_eval(arg, columns) for arg in node.args))
    raise ExpressionError(f"'{type(node).__name__}' is not allowed")  # pragma: no cover
