"""Great Expectations: distribution expectations from the spec, run on a validated partition.

Pandera guards each row; these guard the partition as a whole (a median income out of range, a
bureau field that went missing for many applicants). An ephemeral GX context is used: nothing is
written to disk and analytics are off (see `lending_pipeline.telemetry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd

from lending_pipeline.spec import ExpectationSpec

NO_ROWS = "no validated rows"


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    observed: Any
    expected: str

    def describe(self) -> str:
        target = f" on {self.column}" if self.column else ""
        verdict = "passed" if self.success else "FAILED"
        return (
            f"{self.expectation}{target}: {verdict} "
            f"(observed {self.observed}, expected {self.expected})"
        )


def partition_passes(outcomes: list[ExpectationOutcome], rows: int, required: bool) -> bool:
    """The expectations check's verdict: every expectation met; a partition without validated
    rows passes only for a source that is not required (nothing arrived, nothing to judge)."""
    if rows == 0:
        return not required
    return all(o.success for o in outcomes)


def _class_name(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _expected(spec: ExpectationSpec) -> str:
    parts = []
    if spec.min_value is not None or spec.max_value is not None:
        low = "-inf" if spec.min_value is None else f"{spec.min_value:g}"
        high = "inf" if spec.max_value is None else f"{spec.max_value:g}"
        parts.append(f"between {low} and {high}")
    if spec.mostly is not None:
        parts.append(f"for at least {spec.mostly:.0%} of rows")
    if spec.expectation == "expect_column_values_to_not_be_null":
        parts.insert(0, "not null")
    return " ".join(parts) or "as declared"


def _observed(result: dict) -> Any:
    value = result.get("observed_value")
    if value is not None:
        return round(float(value), 4) if isinstance(value, int | float) else value
    if result.get("unexpected_percent") is not None:
        return f"{result['unexpected_percent']:.2f}% unexpected"
    return "n/a"


@lru_cache(maxsize=32)
def _suite(name: str, expectations: tuple[ExpectationSpec, ...]):
    """A GX batch definition and suite for one source, built once per process."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batches = (
        context.data_sources.add_pandas("lending")
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("partition")
    )
    suite = gx.ExpectationSuite(name=f"{name}_expectations")
    added = []
    for spec in expectations:
        cls = getattr(gx.expectations, _class_name(spec.expectation))
        added.append(suite.add_expectation(cls(**spec.kwargs)))
    return batches, suite, added


def run_expectations(
    frame: pd.DataFrame, expectations: list[ExpectationSpec], name: str
) -> list[ExpectationOutcome]:
    """Validate `frame` against the expectations; one outcome per expectation, in order.

    A frame without rows is not evaluated: every outcome fails with observed "no validated
    rows" (why there are none is the schema check's to say)."""
    if len(frame) == 0:
        return [
            ExpectationOutcome(e.expectation, e.column, False, NO_ROWS, _expected(e))
            for e in expectations
        ]
    batches, suite, added = _suite(name, tuple(expectations))
    needed = list(dict.fromkeys(e.column for e in expectations if e.column))
    subset = frame[needed] if needed else pd.DataFrame(index=frame.index)
    batch = batches.get_batch(batch_parameters={"dataframe": _plain(subset)})
    pending = list(batch.validate(suite, result_format="BASIC").results)
    results = []
    for expectation in added:  # match results to expectations by their configuration
        wanted = _signature(expectation.expectation_type, expectation.configuration.kwargs)
        match = next(
            r
            for r in pending
            if _signature(r.expectation_config.type, r.expectation_config.kwargs) == wanted
        )
        pending.remove(match)
        results.append(match)
    return [
        ExpectationOutcome(
            expectation=spec.expectation,
            column=spec.column,
            success=bool(result.success),
            observed=_observed(result.result),
            expected=_expected(spec),
        )
        for spec, result in zip(expectations, results, strict=True)
    ]


def _signature(kind: str, kwargs: dict) -> tuple:
    return kind, sorted((k, str(v)) for k, v in kwargs.items() if k != "batch_id")


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Numpy-backed columns: GX's pandas metrics expect them."""
    out = {}
    for name, column in frame.items():
        if isinstance(column.dtype, pd.StringDtype):
            out[name] = column.astype(object).where(column.notna(), None)
        elif str(column.dtype) in ("Int64", "boolean"):
            out[name] = column.astype("float64")
        else:
            out[name] = column
    return pd.DataFrame(out, index=frame.index)
