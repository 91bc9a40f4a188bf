import numpy as np
import pandas as pd
import pytest

from lending_pipeline.ml.expressions import ExpressionError, evaluate, referenced_columns


def frame():
    return pd.DataFrame(
        {
            "a": [1.0, 2.0, np.nan, 4.0],
            "b": [2.0, 0.0, 1.0, 2.0],
            "s": ["x", "y", None, "x"],
            "d1": pd.to_datetime(["2025-01-01", "2025-01-10", None, "2025-02-01"]),
            "d2": pd.to_datetime(["2025-01-31", "2025-01-10", "2025-01-01", "2025-02-02"]),
        }
    )


def run(expression):
    data = frame()
    return evaluate(expression, dict(data.items()), data.index).tolist()


def test_arithmetic_and_division_by_zero_gives_nan():
    out = run("a / b + 1")
    assert out[0] == 1.5
    assert np.isnan(out[1]) and np.isnan(out[2])
    assert out[3] == 3.0


def test_comparisons_give_one_or_zero():
    equal = run("s == 'x'")
    assert equal[:2] == [1.0, 0.0] and np.isnan(equal[2]) and equal[3] == 1.0
    assert run("b >= 2") == [1.0, 0.0, 0.0, 1.0]
    unknown = run("a > 1")
    assert unknown[:2] == [0.0, 1.0] and np.isnan(unknown[2])


def test_functions():
    assert run("coalesce(a, b)") == [1.0, 2.0, 1.0, 4.0]
    assert run("days_between(d1, d2)")[0] == 30.0
    assert run("clip(a, 0, 2)")[3] == 2.0
    assert run("min(a, b)")[0] == 1.0
    assert run("is_null(a)") == [0.0, 0.0, 1.0, 0.0]
    assert run("-a ** 2")[1] == -4.0


def test_referenced_columns_excludes_functions():
    assert referenced_columns("coalesce(a, b) / log1p(c)") == {"a", "b", "c"}


@pytest.mark.parametrize(
    "expression, message",
    [
        ("__import__('os').system('true')", "unknown function"),
        ("a.real", "Attribute"),
        ("a[0]", "Subscript"),
        ("(lambda: 1)()", "unknown function"),
        ("[a for a in b]", "ListComp"),
        ("open('x')", "unknown function"),
        ("a if b else 1", "IfExp"),
        ("1 < a < 3", "chained"),
        ("min(a)", "takes 2..2"),
        ("a +", "not a valid expression"),
        ("None", "not allowed"),
    ],
)
def test_unsafe_or_invalid_expressions_are_refused(expression, message):
    with pytest.raises(ExpressionError, match=message):
        referenced_columns(expression)


def test_unknown_column_at_evaluation():
    data = frame()
    with pytest.raises(ExpressionError, match="unknown column 'zz'"):
        evaluate("zz + 1", dict(data.items()), data.index)
