"""Draft a spec from landing files (`lending-pipeline spec init --from-files DIR`).

Each folder under DIR holding CSV or Parquet files is a source (files directly in DIR are a
source named after the folder). Files named with a day (`2025-03-01.csv`) make a daily source,
`files: "<folder>/{date}*.<ext>"`; a folder whose files carry no day is a static reference
source. From a sample of the rows it infers dtypes, nullability, allowed values of
low-cardinality text, numeric lower bounds, the join key (a column every source shares), date
columns, the target (a 0/1 column named like a label), PII candidates (by name and content)
and protected-attribute candidates. The draft is a starting point: every guess to confirm is
listed in the header comment, and the draft is validated as any spec is.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
PII_NAMES = re.compile(
    r"(name|email|e_mail|phone|mobile|ssn|social|address|street|postcode|zip|birth|dob|"
    r"passport|iban|account_number|ip_address|tax_id|national_id)",
)
PROTECTED_NAMES = re.compile(
    r"^(age|age_band|age_group|sex|gender|race|ethnicity|religion|marital.*)$"
)
TARGET_NAMES = re.compile(
    r"(default|bad|target|label|delinquen|charged_off|outcome|missed|arrears|late)"
)
SAMPLE_ROWS = 5000
MAX_CATEGORIES = 20


@dataclass
class SourceDraft:
    name: str
    folder: Path
    files: list[Path]
    dated: bool
    frame: pd.DataFrame
    days: list[str] = field(default_factory=list)  # the day of each sampled row's file
    columns: dict[str, dict] = field(default_factory=dict)

    def dated_by_file(self) -> bool:
        """Whether a date column equals the day in each row's file name (the entity source's
        rows are partitioned by their own date)."""
        if not self.dated:
            return False
        days = pd.Series(self.days[: len(self.frame)], index=self.frame.index[: len(self.days)])
        dates = [c for c, col in self.columns.items() if col["dtype"] == "date"]
        return any((self.frame[c].reindex(days.index) == days).all() for c in dates)


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path).astype("string").astype(object)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], nrows=SAMPLE_ROWS)


def _sources(root: Path) -> list[SourceDraft]:
    groups: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".csv", ".parquet"):
            groups.setdefault(path.parent, []).append(path)
    drafts = []
    for folder, paths in groups.items():
        dated = all(DAY.search(p.name) for p in paths)
        frames = [_read(p) for p in paths[:20]]
        sample = pd.concat(frames, ignore_index=True).head(SAMPLE_ROWS)
        days = [DAY.search(p.name).group(0) if dated else "" for p in paths[: len(frames)]]
        days = [day for day, f in zip(days, frames, strict=True) for _ in range(len(f))]
        label = folder.name if dated or len(paths) > 1 else paths[0].stem
        name = re.sub(r"[^a-z0-9_]", "_", label.lower()).strip("_") or "source"
        drafts.append(SourceDraft(name, folder, paths, dated, sample, days[:SAMPLE_ROWS]))
    return drafts


def _infer(values: pd.Series, name: str) -> dict:
    text = values.dropna().astype(str).str.strip()
    text = text[text != ""]
    column: dict = {}
    if len(text) == 0:
        return {"dtype": "string", "nullable": True}
    numbers = pd.to_numeric(text, errors="coerce")
    if PII_NAMES.search(name) or text.str.contains("@").mean() > 0.5:
        column.update(dtype="string", pii=True)  # by name or content: phone numbers, zips too
    elif numbers.notna().all():
        whole = (numbers == numbers.round()).all()
        column["dtype"] = "int" if whole else "float"
        if numbers.min() >= 0:
            column["min"] = 0
        distinct = sorted(numbers.unique())
        if whole and len(distinct) <= 2 and set(distinct) <= {0, 1}:
            column["allowed"] = [0, 1]
    elif pd.to_datetime(text, format="%Y-%m-%d", errors="coerce").notna().all():
        column["dtype"] = "date"
    elif text.str.lower().isin(["true", "false"]).all():
        column["dtype"] = "bool"
    else:
        distinct = text.unique()
        few = len(distinct) <= MAX_CATEGORIES and len(distinct) <= max(2, len(text) // 2)
        column["dtype"] = "category" if few else "string"
        if few:
            column["allowed"] = sorted(str(v) for v in distinct)
    if values.isna().any() or (values.astype(str).str.strip() == "").any():
        column["nullable"] = True
    return column


def _names(draft: SourceDraft) -> list[str]:
    return [re.sub(r"[^a-z0-9_]", "_", c.strip().lower()) for c in draft.frame.columns]


def draft_spec(root: Path, base: Path, name: str = "my_loan") -> tuple[dict, list[str]]:
    """The draft spec (a mapping) and the guesses a person must confirm; `files` globs are
    relative to `base` (the data dir)."""
    drafts = _sources(root)
    if not drafts:
        raise ValueError(f"no CSV or Parquet files under {root}")
    review: list[str] = []
    shared = Counter(n for d in drafts for n in set(_names(d)))
    for draft in drafts:
        draft.frame.columns = _names(draft)
        draft.columns = {c: _infer(draft.frame[c], c) for c in draft.frame.columns}
    candidates = [n for n, count in shared.most_common() if count == len(drafts)]
    key = next(
        (n for n in candidates if any(d.frame[n].is_unique for d in drafts if d.dated)), None
    ) or (candidates[0] if candidates else _names(drafts[0])[0])
    review.append(f"entity.key: '{key}' (a column every source shares)")
    dated = [d for d in drafts if d.dated]
    labels = [
        (d, c, bool(TARGET_NAMES.search(c)))
        for d in dated
        for c, col in d.columns.items()
        if col.get("allowed") == [0, 1]
    ]
    labels.sort(key=lambda item: (not item[2], len(item[0].columns)))  # named so, narrow source
    target = labels[0][:2] if labels else None
    with_dates = [d for d in dated if d is not (target and target[0]) and d.frame[key].is_unique]
    entity = max(
        with_dates or dated or drafts,
        key=lambda d: (d.dated_by_file(), len(d.columns), len(d.frame)),
    )
    review.append(f"entity.source: '{entity.name}' (one row per application)")
    sources = []
    seen: dict[str, str] = {}
    inputs, protected = [], []
    for draft in drafts:
        spec_columns = {c: dict(col) for c, col in draft.columns.items()}
        source: dict = {"name": draft.name, "files": _files(base, draft), "format": _format(draft)}
        if not draft.dated:
            joins = [c for c in spec_columns if c in entity.columns and c != key]
            source.update(static=True, key=joins[:1] or [key])
            review.append(f"sources.{draft.name}: static reference data joined on {source['key']}")
        else:
            source["key"] = [key]
            dates = [c for c, col in spec_columns.items() if col["dtype"] == "date"]
            if dates:
                source["date_column"] = dates[0]
                if draft is not entity and not draft.frame[key].is_unique:
                    source["key"] = [key, dates[0]]
            else:
                source["date_column"] = f"{draft.name}_date"
                source["date_from"] = "partition"
                spec_columns[source["date_column"]] = {"dtype": "date"}
                review.append(f"sources.{draft.name}: no date column; dated by its file's day")
        is_target = target is not None and draft is target[0]
        if is_target:
            source["required"] = False
        rename = {}
        for column, col in list(spec_columns.items()):
            if col.get("pii"):
                review.append(f"sources.{draft.name}.columns.{column}: PII? (pii: true)")
            if column in source["key"] or is_target:
                continue
            if column in seen and column not in (key, source.get("date_column")):
                new = f"{draft.name}_{column}"
                rename[column] = new
                spec_columns[new] = spec_columns.pop(column)
                review.append(f"sources.{draft.name}.rename: '{column}' also in '{seen[column]}'")
                column = new
            seen[column] = draft.name
            col = spec_columns[column]
            if PROTECTED_NAMES.match(column) and not col.get("pii"):
                protected.append(column)
            elif col["dtype"] in ("int", "float", "category", "bool") and not col.get("pii"):
                inputs.append(column)
        if rename:
            source["rename"] = rename
        source["columns"] = spec_columns
        sources.append(source)
    sources.sort(key=lambda s: s["name"] != entity.name)
    if protected:
        review.append(f"protected_attributes: {protected} (fairness only, never inputs)")
    spec = {
        "name": name,
        "description": f"Drafted from the files under {root.name}/ by `spec init`: review it.",
        "partitions": {"start_date": _first_day(drafts)},
        "entity": {"source": entity.name, "key": key},
        "sources": sources,
    }
    if target:
        spec["target"] = {"source": target[0].name, "column": target[1], "maturity_days": 30}
        review.append(f"target: {target[0].name}.{target[1]}; maturity_days 30 is a guess (REVIEW)")
    else:
        review.append("target: no 0/1 label column found: declare target (REVIEW)")
    spec["features"] = {"model_inputs": inputs}
    spec["protected_attributes"] = protected
    return spec, review


def _files(base: Path, draft: SourceDraft) -> str:
    folder = draft.folder.relative_to(base).as_posix()
    prefix = "" if folder == "." else folder + "/"
    if draft.dated:
        return f"{prefix}{{date}}*{draft.files[0].suffix}"
    return prefix + draft.files[0].name


def _format(draft: SourceDraft) -> str:
    return "parquet" if draft.files[0].suffix == ".parquet" else "csv"


def _first_day(drafts: list[SourceDraft]) -> str:
    days = [DAY.search(p.name).group(0) for d in drafts if d.dated for p in d.files]
    return min(days) if days else "2025-01-01"


def render(spec: dict, review: list[str]) -> str:
    """The draft as YAML, with what to confirm as a header comment."""
    lines = [
        "# Drafted by `lending-pipeline spec init`. Confirm or fix, then run",
        "#   lending-pipeline spec PATH",
        "# Guesses to confirm:",
    ]
    lines += [f"#   - {item}" for item in review]
    body = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100)
    return "\n".join(lines) + "\n" + body
