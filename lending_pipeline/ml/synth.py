"""Synthetic consumer-loan data: applications, bureau pulls, income and outcomes.

Applicants are drawn from fixed-seed distributions; the probability of default is a known
function of what the bureau, income and application files show (`default_logit`), plus noise, so
a good model reaches an out-of-time ROC-AUC of about 0.8 and a naive one does not.

Realistic defects are built in: about 1% of bureau pulls are stale (35-120 days old), 5% of
applications have a later re-pull dated after the application (which a point-in-time join must
ignore; it shows post-application delinquencies), 1% have no bureau pull at all, and income
verification is missing for the unverified.

Scenarios simulate a changing applicant population from `scenario_start` on:
`income_shock` (income down 30%, more unemployment), `utilization_spike` (revolving utilisation
up 25 points) and `missing_bureau_fields` (30% of optional bureau fields blank).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from lending_pipeline.spec import PipelineSpec, SourceSpec

SCENARIOS = ("income_shock", "utilization_spike", "missing_bureau_fields")

FIRST_NAMES = np.array(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony "
    "Betty Mark Sandra Donald Ashley Steven Kimberly Andrew Emily Paul Donna Joshua Michelle "
    "Kenneth Carol Kevin Amanda Brian Melissa George Deborah Timothy Stephanie Amara Wei Priya "
    "Mateo Sofia Olena Kwame Aiko Yusuf Ines".split()
)
LAST_NAMES = np.array(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Okafor Tanaka "
    "Kowalski Haddad Lindqvist Moreau Novak".split()
)
STREETS = np.array(
    "Oak Maple Pine Cedar Elm Birch Walnut Chestnut Willow Aspen Lake Hill River Park Meadow "
    "Forest Spring Valley Ridge Sunset".split()
)
CITIES = np.array(
    "Springfield Riverton Fairview Greenville Madison Georgetown Clinton Salem Franklin Arlington "
    "Ashland Burlington Dayton Milton Newport".split()
)

PURPOSES = ["debt_consolidation", "home_improvement", "car", "medical", "education", "other"]
EMPLOYMENT = ["salaried", "self_employed", "contract", "retired", "unemployed"]
VERIFICATION = ["verified", "stated", "not_verified"]
AGE_BANDS = [(18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-54"), (55, "55-64"), (65, "65+")]


@dataclass(frozen=True)
class GenerationResult:
    days: list[str]
    applications: int
    files: int
    default_rate: float


def default_logit(frame: pd.DataFrame) -> np.ndarray:
    """The documented risk function: log-odds of default from what the files show.

    Inputs are the true applicant values: debt-to-income `dti`, utilisation `util`,
    delinquencies in 24 months, bureau inquiries in 6 months, oldest account age, annual
    income, verification status, employment type and tenure, term and a recent delinquency,
    plus steps at high utilisation and debt-to-income and an inquiries x delinquency interaction.
    """
    recent = frame["months_since_last_delinquency"].fillna(999) < 6
    return (
        -3.4
        + 3.0 * (frame["dti"] - 0.35)
        + 2.3 * (frame["util"] - 0.35)
        + 0.50 * np.minimum(frame["delinquencies_24m"], 5)
        + 0.20 * np.minimum(frame["inquiries_6m"], 8)
        - 0.005 * (frame["oldest_account_months"] - 120)
        - 0.35 * np.log(frame["income"] / 55_000)
        + 0.45 * (frame["verification_status"] != "verified")
        + 0.55 * (frame["employment_type"] == "unemployed")
        + 0.20 * (frame["employment_type"] == "contract")
        - 0.25 * np.minimum(frame["employment_tenure_months"], 120) / 60
        + 0.012 * (frame["term_months"] - 36)
        + 0.6 * recent
        # Thresholds and an interaction a linear scorecard cannot express:
        + 0.9 * (frame["util"] > 0.85)
        + 0.8 * (frame["dti"] > 0.5)
        + 0.6 * ((frame["inquiries_6m"] >= 3) & (frame["delinquencies_24m"] >= 1))
    ).to_numpy()


def _day_list(start: dt.date, days: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(days)]


def _applicants(rng: np.random.Generator, dates: np.ndarray, scenario_on: np.ndarray, scenario):
    n = len(dates)
    age = np.clip(rng.gamma(6.0, 7.0, n) + 18, 18, 85).astype(int)
    employment = rng.choice(EMPLOYMENT, n, p=[0.62, 0.12, 0.12, 0.08, 0.06])
    employment = np.where(age >= 67, "retired", employment)
    income = np.exp(rng.normal(10.95, 0.5, n)) * np.where(employment == "unemployed", 0.35, 1.0)
    if scenario == "income_shock":
        income = np.where(scenario_on, income * 0.7, income)
        employment = np.where(scenario_on & (rng.random(n) < 0.08), "unemployed", employment)
    income = np.clip(income, 6_000, 1_500_000).round(-2)
    tenure = np.where(
        np.isin(employment, ["retired", "unemployed"]),
        rng.integers(0, 6, n),
        np.minimum(rng.exponential(55, n), (age - 17) * 12),
    ).astype(int)
    verification = rng.choice(VERIFICATION, n, p=[0.55, 0.30, 0.15])
    inflation = np.where(employment == "self_employed", 1.25, 1.06)
    stated = (income * rng.uniform(1.0, inflation)).round(-2)
    verified = np.where(verification == "verified", income, np.nan)

    latent = rng.normal(0, 1, n)
    util = np.clip(rng.beta(2.0, 3.2, n) + 0.12 * latent, 0, 1.2)
    if scenario == "utilization_spike":
        util = np.where(scenario_on, np.clip(util + 0.25, 0, 1.3), util)
    limit = (income * rng.uniform(0.1, 0.6, n)).round(-2)
    delinquencies = rng.poisson(np.exp(-1.4 + 0.7 * latent))
    months_since = np.where(
        delinquencies > 0,
        rng.integers(1, 24, n),
        np.where(rng.random(n) < 0.15, rng.integers(25, 120, n), -1),
    ).astype(float)
    months_since[months_since < 0] = np.nan
    inquiries = rng.poisson(np.exp(0.1 + 0.35 * latent))
    oldest = np.minimum(rng.gamma(3.0, 40.0, n), (age - 17) * 12).astype(int)
    tradelines = rng.poisson(np.clip(2 + oldest / 25, 1, 30)) + 1
    existing_debt = (income / 12 * rng.beta(2.0, 7.0, n)).round(2)

    amount = np.clip(np.exp(rng.normal(9.3, 0.65, n)), 500, 50_000).round(-2)
    term = rng.choice([12, 24, 36, 48, 60], n, p=[0.1, 0.2, 0.35, 0.15, 0.2])
    rate = 0.01
    installment = amount * rate / (1 - (1 + rate) ** (-term))
    dti = (existing_debt + installment) / (income / 12)

    frame = pd.DataFrame(
        {
            "application_date": dates,
            "age": age,
            "employment_type": employment,
            "income": income,
            "stated_income": stated,
            "verified_income": verified,
            "verification_status": verification,
            "employment_tenure_months": tenure,
            "util": util,
            "revolving_limit": limit,
            "revolving_balance": (limit * util).round(2),
            "delinquencies_24m": delinquencies,
            "months_since_last_delinquency": months_since,
            "inquiries_6m": inquiries,
            "oldest_account_months": oldest,
            "tradeline_count": tradelines,
            "monthly_debt_payments": existing_debt,
            "loan_amount": amount,
            "term_months": term,
            "dti": dti,
        }
    )
    logit = default_logit(frame) + rng.normal(0, 0.3, n)
    frame["default_flag"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def _text(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _iso(dates: np.ndarray) -> pa.Array:
    """datetime64[D] values as ISO date strings."""
    return pa.array(dates.astype("datetime64[D]")).cast(pa.string())


def _pii(rng: np.random.Generator, people: pd.DataFrame) -> dict[str, pa.Array]:
    n = len(people)
    first = pa.array(FIRST_NAMES).take(rng.integers(0, len(FIRST_NAMES), n))
    last = pa.array(LAST_NAMES).take(rng.integers(0, len(LAST_NAMES), n))
    ssn = _text(rng.integers(100_000_000, 899_999_999, n))
    birth = people["application_date"].to_numpy().astype("datetime64[D]") - (
        people["age"].to_numpy() * 365.25 + rng.integers(0, 365, n)
    ).astype("timedelta64[D]")
    street = pa.array(STREETS).take(rng.integers(0, len(STREETS), n))
    city = pa.array(CITIES).take(rng.integers(0, len(CITIES), n))
    return {
        "full_name": _join(first, " ", last),
        "ssn": _join(
            pc.utf8_slice_codeunits(ssn, 0, 3),
            "-",
            pc.utf8_slice_codeunits(ssn, 3, 5),
            "-",
            pc.utf8_slice_codeunits(ssn, 5, 9),
        ),
        "date_of_birth": _iso(birth),
        "email": pc.utf8_lower(
            _join(first, ".", last, _text(rng.integers(1, 10_000, n)), "@example.com")
        ),
        "address": _join(_text(rng.integers(1, 9999, n)), " ", street, " Street, ", city),
    }


def _age_band(age: np.ndarray) -> np.ndarray:
    bounds = [b for b, _ in AGE_BANDS]
    labels = np.array([label for _, label in AGE_BANDS])
    return labels[np.searchsorted(bounds, age, side="right") - 1]


@dataclass(frozen=True)
class Tables:
    """Generated tables as Arrow tables, each with the partition day index of every row."""

    days: list[dt.date]
    tables: dict[str, pa.Table]
    day_index: dict[str, np.ndarray]
    outcome_rate: float


def build_tables(
    start: dt.date,
    days: int,
    per_day: int,
    seed: int = 7,
    scenario: str | None = None,
    scenario_start: dt.date | None = None,
    maturity_days: int = 90,
) -> Tables:
    """All four tables for `days` days from `start`, about `per_day` applications a day."""
    if scenario is not None and scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario '{scenario}' (choose from {', '.join(SCENARIOS)})")
    rng = np.random.default_rng(seed)
    day_list = _day_list(start, days)
    counts = rng.poisson(per_day, days) if per_day >= 20 else np.full(days, per_day)
    day_index = np.repeat(np.arange(days), counts)
    dates = np.array(day_list, dtype="datetime64[D]")[day_index]
    n = len(dates)
    scenario_from = np.datetime64(scenario_start or start, "D")
    scenario_on = (dates >= scenario_from) if scenario else np.zeros(n, dtype=bool)
    people = _applicants(rng, dates, scenario_on, scenario)
    ids = _join("A", pc.utf8_lpad(_text(np.arange(n) + seed * 10_000_000), 10, "0"))
    date_text = _iso(dates)

    applications = pa.table(
        {
            "application_id": ids,
            "application_date": date_text,
            "loan_amount": people["loan_amount"].to_numpy(),
            "term_months": people["term_months"].to_numpy(),
            "purpose": rng.choice(PURPOSES, n, p=[0.42, 0.16, 0.14, 0.08, 0.06, 0.14]),
            "channel": rng.choice(["web", "branch", "broker"], n, p=[0.6, 0.25, 0.15]),
            **_pii(rng, people),
            "age_band": _age_band(people["age"].to_numpy()),
            "sex": rng.choice(["F", "M", "U"], n, p=[0.49, 0.49, 0.02]),
        }
    )
    income = pa.table(
        {
            "application_id": ids,
            "reported_date": date_text,
            "stated_income": people["stated_income"].to_numpy(),
            "verified_income": people["verified_income"].to_numpy(),
            "employment_type": people["employment_type"].to_numpy(),
            "employment_tenure_months": people["employment_tenure_months"].to_numpy(),
            "verification_status": people["verification_status"].to_numpy(),
        }
    )
    outcomes = pa.table(
        {
            "application_id": ids,
            "observation_date": _iso(dates + np.timedelta64(maturity_days, "D")),
            "default_flag": people["default_flag"].to_numpy(),
        }
    )
    bureau, bureau_days = _bureau(rng, people, ids, day_index, dates, scenario_on, scenario)
    return Tables(
        days=day_list,
        tables={
            "applications": applications,
            "bureau": bureau,
            "income": income,
            "outcomes": outcomes,
        },
        day_index={
            "applications": day_index,
            "bureau": bureau_days,
            "income": day_index,
            "outcomes": day_index,
        },
        outcome_rate=float(people["default_flag"].mean()),
    )


BUREAU_COLUMNS = [
    "tradeline_count",
    "revolving_balance",
    "revolving_limit",
    "delinquencies_24m",
    "months_since_last_delinquency",
    "inquiries_6m",
    "oldest_account_months",
    "monthly_debt_payments",
]


def _bureau(rng, people, ids, day_index, dates, scenario_on, scenario):
    n = len(ids)
    age_days = rng.integers(0, 11, n)
    stale = rng.random(n) < 0.01  # well inside the shipped freshness limit (5%)
    age_days = np.where(stale, rng.integers(35, 121, n), age_days)
    first = {c: people[c].to_numpy() for c in BUREAU_COLUMNS}
    first["inquiries_6m"] = first["inquiries_6m"].astype("float64")
    if scenario == "missing_bureau_fields":
        for column in ("revolving_balance", "inquiries_6m", "monthly_debt_payments"):
            blank = scenario_on & (rng.random(n) < 0.3)
            first[column] = np.where(blank, np.nan, first[column].astype("float64"))
    keep = rng.random(n) >= 0.01  # 1% have no bureau pull at all

    # A later re-pull, dated after the application: it shows what happened next, so using it
    # would leak the outcome into the features.
    repull = rng.random(n) < 0.05
    later = {c: people[c].to_numpy()[repull] for c in BUREAU_COLUMNS}
    later["delinquencies_24m"] = (
        later["delinquencies_24m"] + 2 * people["default_flag"].to_numpy()[repull]
    )
    later["inquiries_6m"] = later["inquiries_6m"].astype("float64")
    later_dates = dates[repull] + rng.integers(5, 41, repull.sum()).astype("timedelta64[D]")

    columns = {
        "application_id": pa.concat_arrays(
            [ids.filter(pa.array(keep)), ids.filter(pa.array(repull))]
        ),
        "pull_date": pa.concat_arrays(
            [_iso(dates[keep] - age_days[keep].astype("timedelta64[D]")), _iso(later_dates)]
        ),
    }
    for column in BUREAU_COLUMNS:
        values = np.concatenate([first[column][keep], later[column]])
        if column == "inquiries_6m":
            values = pa.array(values, from_pandas=True).cast(pa.int64())
        columns[column] = values
    table = pa.table(columns)
    days = np.concatenate([day_index[keep], day_index[repull]])
    order = np.argsort(days, kind="stable")
    return table.take(order), days[order]


def partition_path(data_dir: Path, source: SourceSpec, day: str) -> Path:
    """Where a generated file for one source and day is written (the spec's glob, filled in)."""
    name = source.files_for(day).replace("*", "")
    suffix = "" if name.endswith(f".{source.format}") else f".{source.format}"
    return data_dir / (name + suffix)


def write_table(table: pa.Table | pd.DataFrame, path: Path, fmt: str) -> None:
    """Write one landing file (CSV or Parquet) atomically."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        pq.write_table(table, tmp)
    else:
        pacsv.write_csv(table, tmp, pacsv.WriteOptions(quoting_style="needed"))
    tmp.replace(path)


def write_partitions(
    spec: PipelineSpec,
    data_dir: Path,
    generated: Tables,
    as_of: dt.date,
    progress: bool = False,
) -> int:
    """Write one file per source and day; the target's only for matured days. Returns files."""
    maturity = dt.timedelta(days=spec.target.maturity_days)
    sources = spec.source_by_name
    bounds = {
        name: np.searchsorted(index, np.arange(len(generated.days) + 1))
        for name, index in generated.day_index.items()
    }
    files = 0
    for i, day in enumerate(
        tqdm(generated.days, desc="generate", unit="day", disable=not progress)
    ):
        for name, table in generated.tables.items():
            if name == spec.target.source and day + maturity > as_of:
                continue
            lo, hi = bounds[name][i], bounds[name][i + 1]
            source = sources[name]
            rows = table.slice(lo, hi - lo)
            # Nothing dated after as_of exists yet (e.g. a re-pull still to come).
            rows = rows.filter(pc.less_equal(rows[source.date_column], as_of.isoformat()))
            write_table(
                rows,
                partition_path(data_dir, source, day.isoformat()),
                source.format,
            )
            files += 1
    return files


def generate_consumer_loans(
    spec: PipelineSpec,
    data_dir: Path,
    start: dt.date,
    days: int,
    per_day: int,
    seed: int = 7,
    scenario: str | None = None,
    scenario_start: dt.date | None = None,
    as_of: dt.date | None = None,
    progress: bool = False,
) -> GenerationResult:
    """Write daily landing files for the consumer-loan spec.

    Outcomes for an application day are written only once it has matured
    (day + maturity_days <= as_of; as_of defaults to the day after the last day).
    """
    generated = build_tables(
        start, days, per_day, seed, scenario, scenario_start, spec.target.maturity_days
    )
    as_of = as_of or start + dt.timedelta(days=days)
    files = write_partitions(spec, data_dir, generated, as_of, progress)
    return GenerationResult(
        days=[d.isoformat() for d in generated.days],
        applications=generated.tables["applications"].num_rows,
        files=files,
        default_rate=generated.outcome_rate,
    )
