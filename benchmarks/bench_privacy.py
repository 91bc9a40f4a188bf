"""What sealing the audited inputs and a rotated keyring add to one /score request.

In one process, on SQLite stores in a temp dir (as the service writes them: WAL, a background
WAL copier), per request of one application, a new applicant each time:

- audit plain: `store.append("decision", [entry])` with the inputs in clear (the former path);
- audit sealed: the applicant's data key made and stored (one key store transaction), the
  inputs encrypted (AES-256-GCM), then the same append (the path /score now takes);
- validate 1 key / 3 keys: validation and pseudonymisation of the request under a single key and
  under a keyring rotated twice (every PII field goes through three HMAC layers).

The sides alternate in rounds so drift of the machine's speed hits both. Prints medians and
99th percentiles in microseconds and the p50 added per request; writes
benchmarks/results/privacy.json.

    .venv/bin/python benchmarks/bench_privacy.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

from lending_pipeline.ml import audit, data_keys, keyring
from lending_pipeline.ml.scoring import records_from_tables
from lending_pipeline.ml.synth import build_tables
from lending_pipeline.serving.requests import RequestValidator
from lending_pipeline.spec import load_spec

RESULTS = Path(__file__).resolve().parent / "results" / "privacy.json"
AUDIT_KEY = b"benchmark-only-audit-key-0123456789"
PII_KEYS = [b"benchmark-only-pii-key-0", b"benchmark-only-pii-key-1", b"benchmark-only-pii-key-2"]


def applications(spec, count: int) -> list[dict]:
    built = build_tables(dt.date(2025, 3, 1), 3, max(count // 3, 20), seed=3)
    tables = {}
    for name, table in built.tables.items():
        frame = table.to_pandas()
        for column, declared in spec.source_by_name[name].columns.items():
            if declared.dtype == "date":
                frame[column] = pd.to_datetime(frame[column])
        tables[name] = frame
    return records_from_tables(spec, tables)[:count]


def entry(validate: RequestValidator, raw: dict, subject: str) -> dict:
    record = validate(raw)
    record["application_id"] = subject
    return {
        "caller": "benchmark",
        "decision": "approve",
        "input_hmac": validate.input_hmac(raw),
        "inputs": record,
        "model": {"name": "consumer_loan_pd", "version": "1"},
        "pii_key": "pk-benchmark",
        "probability_of_default": 0.05,
        "reason_codes": [],
        "request_id": uuid.uuid4().hex,
        "score": 700,
    }


def timed(action, items) -> list[float]:
    out = []
    for item in items:
        began = time.perf_counter()
        action(item)
        out.append((time.perf_counter() - began) * 1e6)
    return out


def stats(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered), 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1], 1),
        "n": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    spec = load_spec()
    raw = applications(spec, 200)
    one = RequestValidator(spec, keyring.Keyring([("k0", PII_KEYS[0])]))
    three = RequestValidator(spec, keyring.Keyring([(f"k{i}", k) for i, k in enumerate(PII_KEYS)]))
    samples = {"audit plain": [], "audit sealed": [], "validate 1 key": [], "validate 3 keys": []}
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as tmp:
        os.environ.pop(audit.AUDIT_URL_ENV, None)
        os.environ.pop(audit.CHECKPOINTS_ENV, None)
        root = Path(tmp)
        plain = audit.open_store(root / "plain", checkpoint_every=1.0, key=AUDIT_KEY)
        sealed = audit.open_store(root / "sealed", checkpoint_every=1.0, key=AUDIT_KEY)
        keys = data_keys.open_store(root / "sealed", checkpoint_every=1.0)
        seal = data_keys.Sealer(keys, spec.entity.key)
        per_round = args.requests // args.rounds
        counter = 0
        for _ in range(args.rounds):
            batch = []
            for i in range(per_round):
                counter += 1
                batch.append(entry(one, raw[i % len(raw)], f"APP-{counter:09d}"))
            twin = copy.deepcopy(batch)
            samples["audit plain"] += timed(lambda e: plain.append("decision", [e]), batch)
            samples["audit sealed"] += timed(lambda e: sealed.append("decision", seal([e])), twin)
            requests = [raw[i % len(raw)] for i in range(per_round)]
            samples["validate 1 key"] += timed(one, requests)
            samples["validate 3 keys"] += timed(three, requests)
        plain.close()
        sealed.close()
        keys.close()
    result = {name: stats(values) for name, values in samples.items()}
    added = result["audit sealed"]["p50_us"] - result["audit plain"]["p50_us"]
    rotation = result["validate 3 keys"]["p50_us"] - result["validate 1 key"]["p50_us"]
    result["sealing_added_p50_us"] = round(added, 1)
    result["two_rotations_added_p50_us"] = round(rotation, 1)
    print(f"{'path':<18}{'p50 us':>10}{'p99 us':>10}")
    for name in samples:
        print(f"{name:<18}{result[name]['p50_us']:>10}{result[name]['p99_us']:>10}")
    print(f"sealing adds {added:.0f} us p50 per /score (one application)")
    print(f"a keyring rotated twice adds {rotation:.0f} us p50 to validation")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
