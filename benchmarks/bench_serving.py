"""Scoring latency and throughput: the BentoML service against bare FastAPI endpoints.

All serve the same fitted model (the shipped spec's settings, trained on generated data) with
one worker each (the service runs with `LENDING_SERVING_WORKERS=1` here; its default is 2).
The BentoML service does everything it does in production: bearer-token check, body limit,
strict validation against the spec, PII pseudonymisation, reason codes for refer/decline, the
audit-log append (SQLite) and metrics. The bare endpoints compute the features (the
project's feature code) and the probability and return the decision, nothing else:

- `bare` (the baseline the targets are judged against): FastAPI serving the scikit-learn
  pipeline as one would by hand, `predict_proba` on a one-row DataFrame of model inputs;
- `bare_fast`: FastAPI calling the project's own scoring path (compiled trees), so the gap to the
  service is what authentication, validation, pseudonyms, reasons, the audit write, metrics and
  BentoML cost together.

The load generator (raw HTTP/1.1 over keep-alive sockets, one process) sends recorded
applications:

- p50 / p99 latency at concurrency 1, throughput at concurrency 16, every endpoint;
- the same through the proxy (`lending-pipeline serve`: HAProxy on the public port) against the
  slot directly: what the proxy adds;
- one `/score_batch` of 10,000 applications;
- the frameworks' own floor: a BentoML service and a FastAPI app that parse the same bodies and
  answer a constant (no model, no auth, no audit), to show what BentoML itself costs per request;
- faults, on a stack with the default two workers per slot and a client on one kept-alive
  connection: requests failed and seconds until service resumed after SIGKILL of the active
  slot's server, of one of its workers and of the proxy; seconds from a rollback's request to the
  client's first answer from the rolled-back version, the target cold (its slot starts it) and
  warm (its slot still runs it).

Writes benchmarks/results/serving.json.

    .venv/bin/python benchmarks/bench_serving.py [--requests 3000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
TARGETS = {"p50_ms": 5.0, "p99_ms": 15.0, "throughput_ratio": 0.8, "batch_10k_s": 1.0}
KEY = "bench-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request_bytes(port: int, path: str, body: dict, token: str | None) -> bytes:
    payload = json.dumps(body).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def _one(reader, writer, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def _load(
    port: int, requests: list[bytes], concurrency: int, seconds: float | None, count: int | None
) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + (seconds or 1e9)
    sent = 0

    async def worker(offset: int):
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while time.perf_counter() < deadline and (count is None or sent < count):
            sent += 1
            began = time.perf_counter()
            status = await _one(reader, writer, requests[i % len(requests)])
            latencies.append(time.perf_counter() - began)
            errors += status != 200
            i += concurrency
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "p99_ms": 1e3 * latencies[int(len(latencies) * 0.99)],
        "throughput_rps": len(latencies) / elapsed,
    }


def load(port, requests, concurrency, seconds=None, count=None) -> dict:
    return asyncio.run(_load(port, requests, concurrency, seconds, count))


async def _paired(direct: tuple, proxied: tuple, count: int) -> dict:
    """The same application sent to the slot and through the proxy, one after the other, each
    on its own kept-alive connection: the difference of each pair is the proxy's cost, measured
    under the same load (a busy machine slows both requests of a pair alike)."""
    connections = [
        await asyncio.open_connection("127.0.0.1", port) for port, _ in (direct, proxied)
    ]
    differences, times = [], {"direct": [], "proxied": []}
    for i in range(count):
        pair = []
        for (reader, writer), (_, requests) in zip(connections, (direct, proxied), strict=True):
            began = time.perf_counter()
            await _one(reader, writer, requests[i % len(requests)])
            pair.append(time.perf_counter() - began)
        times["direct"].append(pair[0])
        times["proxied"].append(pair[1])
        differences.append(pair[1] - pair[0])
    for _, writer in connections:
        writer.close()
    return {
        "pairs": count,
        "added_p50_ms": 1e3 * statistics.median(differences),
        "direct_p50_ms": 1e3 * statistics.median(times["direct"]),
        "proxied_p50_ms": 1e3 * statistics.median(times["proxied"]),
    }


def paired(direct: tuple, proxied: tuple, count: int) -> dict:
    return asyncio.run(_paired(direct, proxied, count))


def wait_ready(port: int, path: str = "/readyz", timeout: float = 240) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"nothing ready on port {port}")


def prepare(root: Path) -> dict:
    """Train and register one model, package it, and record applications to send."""
    import pickle

    from lending_pipeline.defs.resources import MlflowTracking
    from lending_pipeline.ml import tracking
    from lending_pipeline.ml.features import build_features
    from lending_pipeline.ml.scoring import records_from_tables
    from lending_pipeline.ml.train import labelled, out_of_time_split
    from lending_pipeline.serving.operations import deploy_version
    from lending_pipeline.spec import load_spec
    from lending_pipeline_tests.ml.test_scoring import typed_tables
    from lending_pipeline_tests.serving.conftest import register

    spec = load_spec()
    tables = typed_tables(spec, days=90, per_day=700, seed=9)
    features = build_features(spec, tables).features
    frame = labelled(spec, features, tables["outcomes"], dt.date(2025, 7, 1))
    split = out_of_time_split(frame, "application_date", 10, 10)
    config = MlflowTracking().config(spec.name)
    version, trained = register(spec, config, split)
    tracking.promote(config, version)
    bundle = deploy_version(spec, config, version, root / "data", "benchmark")
    (root / "model.pkl").write_bytes(pickle.dumps((spec, trained.model, trained.cutoff)))
    records = records_from_tables(spec, tables)
    return {"bento_tag": bundle.bento_tag, "records": records, "train_rows": len(split)}


BARE_APP = """
import os, pickle
os.environ.setdefault("OMP_NUM_THREADS", "1")
import pandas as pd
from fastapi import FastAPI, Request
from lending_pipeline.ml.features import derive, model_matrix
from lending_pipeline.ml.scoring import Scorer, column_arrays, request_columns
spec, model, cutoff = pickle.loads(open(os.environ["BENCH_MODEL"], "rb").read())
columns = request_columns(spec)
scorer = Scorer(spec, model, cutoff, {n: None for n in spec.features.model_inputs})
app = FastAPI()

@app.post("/score")
async def score(request: Request):
    application = (await request.json())["application"]
    features = derive(spec, column_arrays(columns, [application]), 1)
    frame = model_matrix(spec, pd.DataFrame(features))
    probability = float(model.predict_proba(frame)[0, 1])
    return {"probability_of_default": probability, "decision": scorer.decide(probability)}

@app.post("/score_fast")
async def score_fast(request: Request):
    application = (await request.json())["application"]
    probability = float(scorer.probabilities(scorer.matrix(scorer.features([application])))[0])
    return {"probability_of_default": probability, "decision": scorer.decide(probability)}
"""


FLOOR_APP = """
from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI()

@app.post("/score")
async def score(request: Request):
    await request.json()
    return Response(b'{"decision": "approve"}', media_type="application/json")
"""

FLOOR_SERVICE = """
from typing import Any
import bentoml
from starlette.responses import Response

@bentoml.service(name="floor", workers=1, tracing={"excluded_urls": ["/score"]})
class Floor:
    @bentoml.api(route="/score")
    async def score(self, application: Any = None) -> Any:
        return Response(b'{"decision": "approve"}', media_type="application/json")
"""


def measure_bare(root: Path, env: dict, records: list[dict], args) -> dict:
    """The same scoring in a plain FastAPI app: the whole request, and the project's path alone."""
    port = free_port()
    (root / "bare_app.py").write_text(BARE_APP)
    bare = start(uvicorn("bare_app:app", port, root), env, root / "bare.log")
    out = {}
    try:
        wait_ready(port, "/docs")
        for name, path in (("bare", "/score"), ("bare_fast", "/score_fast")):
            bodies = [request_bytes(port, path, {"application": r}, None) for r in records[:2000]]
            out[name] = measure(port, bodies, args)
    except ConnectionError:
        print((root / "bare.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        stop(bare)
    return out


def uvicorn(app: str, port: int, root: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", "1", "--log-level", "warning", "--app-dir", str(root)),
    ]


def measure_floor(root: Path, env: dict, records: list[dict], args) -> dict:
    """Both frameworks answering a constant to the same bodies, one worker each."""
    (root / "floor_app.py").write_text(FLOOR_APP)
    (root / "floor_service.py").write_text(FLOOR_SERVICE)
    out = {}
    for name, path in (("fastapi", "/docs"), ("bentoml", "/readyz")):
        port = free_port()
        if name == "fastapi":
            command = uvicorn("floor_app:app", port, root)
        else:
            command = [sys.executable, "-m", "bentoml", "serve", "floor_service:Floor"]
            command += ["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(root)]
        process = start(
            command, {**env, "BENTOML_HOME": str(root / "floor_home")}, root / f"floor_{name}.log"
        )
        try:
            wait_ready(port, path)
            bodies = [
                request_bytes(port, "/score", {"application": r}, None) for r in records[:2000]
            ]
            out[name] = measure(port, bodies, args)
        finally:
            stop(process)
    return out


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as handle:
        return subprocess.Popen(
            command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def measure(port: int, requests: list[bytes], args) -> dict:
    load(port, requests, 1, count=200)  # warm up
    single = load(port, requests, 1, count=args.requests)
    many = load(port, requests, 16, seconds=args.seconds)
    return {"c1": single, "c16": many}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests at concurrency 1")
    parser.add_argument("--seconds", type=float, default=10, help="seconds at concurrency 16")
    parser.add_argument(
        "--only",
        choices=["proxy", "shadow"],
        help="only the slot against the proxy, or the champion alone against it with a shadow "
        "challenger (paired requests)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from lending_pipeline.serving.auth import new_token

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        root = Path(scratch)
        token, line = new_token("bench", "scorer")
        env = {
            **os.environ,
            "LENDING_SERVING_WORKERS": "1",
            "LENDING_DATA_DIR": str(root / "data"),
            "LENDING_PII_KEY": KEY,
            "LENDING_AUDIT_KEY": "benchmark-only-audit-key",
            "LENDING_API_TOKENS": line,
            "BENTOML_DO_NOT_TRACK": "true",
            "BENCH_MODEL": str(root / "model.pkl"),
            "PYTHONPATH": str(ROOT),
        }
        for name in ("MLFLOW_TRACKING_URI", "LENDING_AUDIT_URL", "LENDING_AUDIT_CHECKPOINTS"):
            env.pop(name, None)
        os.environ.update(
            {k: env[k] for k in ("LENDING_DATA_DIR", "LENDING_PII_KEY", "LENDING_AUDIT_KEY")}
        )
        prepared = prepare(root)
        records = prepared["records"]
        results: dict = {"train_rows": prepared["train_rows"], "bento": prepared["bento_tag"]}

        if args.only == "shadow":
            report_shadow(measure_shadow(root, env, token, records, args))
            return
        if not args.only:
            results.update(measure_bare(root, env, records, args))

        public, blue, green = free_port(), free_port(), free_port()
        server = start(
            [
                sys.executable,
                "-m",
                "lending_pipeline.cli",
                "serve",
                "--port",
                str(public),
                "--slot-ports",
                str(blue),
                str(green),
            ],
            env,
            root / "serve.log",
        )
        try:
            wait_ready(blue)
            wait_ready(public)
            direct = [
                request_bytes(blue, "/score", {"application": r}, token) for r in records[:2000]
            ]
            routed = [
                request_bytes(public, "/score", {"application": r}, token) for r in records[:2000]
            ]
            results["proxy_paired"] = paired((blue, direct), (public, routed), args.requests)
            if args.only == "proxy":
                report_proxy(results["proxy_paired"])
                return
            results["bentoml"] = measure(blue, direct, args)
            results["bentoml_via_proxy"] = measure(public, routed, args)
            batch = request_bytes(blue, "/score_batch", {"applications": records[:10_000]}, token)
            timings = [load(blue, [batch], 1, count=1)["p50_ms"] / 1e3 for _ in range(3)]
            results["batch_10k_s"] = statistics.median(timings)
        finally:
            stop(server)
        results["floor"] = measure_floor(root, env, records, args)
        results["faults"] = measure_faults(root, env, token, records)
        results["shadow"] = measure_shadow(root, env, token, records, args)

    report(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def two_versions(root: Path, env: dict, name: str) -> tuple[dict, object, object, str, str]:
    """A data dir of its own with two registered versions, the second the champion."""
    from lending_pipeline.defs.resources import MlflowTracking
    from lending_pipeline.ml import tracking
    from lending_pipeline.spec import load_spec

    data = root / name
    store = f"sqlite:///{data / 'mlflow' / 'mlflow.db'}"
    env = {**env, "LENDING_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": store}
    env.pop("LENDING_SERVING_WORKERS", None)
    os.environ.update({"LENDING_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": store})
    spec = load_spec()
    config = MlflowTracking().config(spec.name)
    first = prepare_version(spec, config, 7)
    tracking.promote(config, first)
    second = prepare_version(spec, config, 11)
    tracking.promote(config, second)
    return env, spec, config, first, second


def measure_shadow(root: Path, env: dict, token: str, records: list[dict], args) -> dict:
    """/score of the champion alone (one slot, kept warm) against the same champion with a
    challenger in its shadow (the other slot), paired request by request."""
    from lending_pipeline.ml import audit, tracking
    from lending_pipeline.serving.deploy import read_record
    from lending_pipeline.serving.operations import deploy_version

    env, spec, config, first, second = two_versions(root, env, "shadow")
    data = Path(env["LENDING_DATA_DIR"])
    alone = deploy_version(spec, config, second, data, "benchmark")
    public, blue, green = free_port(), free_port(), free_port()
    serve = [sys.executable, "-m", "lending_pipeline.cli", "serve", "--port", str(public)]
    server = start([*serve, "--slot-ports", str(blue), str(green)], env, root / "shadow.log")
    slots = {"blue": blue, "green": green}

    def active_port(tag: str) -> int:
        deadline = time.monotonic() + 600
        while (active := read_record(data).get("active") or {}).get("bento_tag") != tag:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{tag} never became active")
            time.sleep(0.5)
        return slots[active["slot"]]

    try:
        alone_port = active_port(alone.bento_tag)
        tracking.set_challenger(config, first)
        shadowed = deploy_version(spec, config, second, data, "benchmark, with a shadow")
        shadow_port = active_port(shadowed.bento_tag)
        pair = paired(
            (
                alone_port,
                [
                    request_bytes(alone_port, "/score", {"application": r}, token)
                    for r in records[:2000]
                ],
            ),
            (
                shadow_port,
                [
                    request_bytes(shadow_port, "/score", {"application": r}, token)
                    for r in records[:2000]
                ],
            ),
            args.requests,
        )
        time.sleep(2)  # the shadow thread drains its queue
    finally:
        stop(server)
    store = audit.open_store(data)
    try:
        scored = sum(1 for e in store.entries() if e.kind == "shadow")
    finally:
        store.close()
    return {
        "pairs": pair["pairs"],
        "alone_p50_ms": pair["direct_p50_ms"],
        "with_shadow_p50_ms": pair["proxied_p50_ms"],
        "added_p50_ms": pair["added_p50_ms"],
        "ratio_p50": pair["proxied_p50_ms"] / pair["direct_p50_ms"],
        "shadow_entries": scored,
    }


def report_shadow(row: dict) -> None:
    print(
        f"/score with a shadow challenger: p50 {row['with_shadow_p50_ms']:.2f} ms against "
        f"{row['alone_p50_ms']:.2f} ms alone ({row['ratio_p50']:.3f}x; median paired difference "
        f"{row['added_p50_ms']:.2f} ms over {row['pairs']} pairs); {row['shadow_entries']} "
        "shadow entries written"
    )


def measure_faults(root: Path, env: dict, token: str, records: list[dict]) -> dict:
    """Fault recovery as a kept-alive client sees it (see the module docstring)."""
    from types import SimpleNamespace

    from lending_pipeline.serving.operations import deploy_version
    from lending_pipeline.serving.supervision import Supervision
    from lending_pipeline_tests.serving.conftest import Load, wait_for

    data = root / "faults"
    env, spec, config, first, second = two_versions(root, env, data.name)
    deploy_version(spec, config, second, data, "benchmark")
    public, blue, green = free_port(), free_port(), free_port()
    serve = [sys.executable, "-m", "lending_pipeline.cli", "serve", "--port", str(public)]
    server = start([*serve, "--slot-ports", str(blue), str(green)], env, root / "faults.log")
    client = SimpleNamespace(url=f"http://127.0.0.1:{public}", scorer_token=token, records=records)
    out: dict = {}
    try:
        wait_ready(public)
        manager = Supervision(data)

        def rollback(name: str, target: str) -> None:
            """From the command to the client's first answer of `target`; and from the moment
            the deployment record asks for it (the deployer's and the proxy's share)."""
            from lending_pipeline.serving.deploy import read_record

            def desired_at() -> float:
                desired = read_record(data).get("desired") or {}
                return time.monotonic() if desired.get("model_version") == target else 0

            with Load(client) as load:
                load.wait_answers(50)
                asked = time.monotonic()
                command = [sys.executable, "-m", "lending_pipeline.cli", "rollback"]
                rolled = subprocess.Popen([*command, "--to", target], env=env)
                requested = wait_for(desired_at, 300, "the rollback's deploy request")

                def reached():
                    answers = [a for a in load.answers if a.sent > asked]
                    return next((a.sent for a in answers if a.version == target), 0)

                first_new = wait_for(reached, 300, "the rolled-back version")
                rolled.wait(timeout=600)
                load.wait_answers(50)
            out[name] = {
                "seconds_command_to_client": first_new - asked,
                "seconds_record_to_client": first_new - requested,
                "failed": sum(a.status != 200 for a in load.answers),
            }

        rollback("rollback_cold", first)
        rollback("rollback_warm", second)
        for name, victim in (
            ("kill_server", lambda: manager.pid(active_slot(data))),
            ("kill_worker", lambda: worker_pid(manager.pid(active_slot(data)))),
            ("kill_proxy", lambda: manager.pid("proxy")),
        ):
            with Load(client) as load:
                load.wait_answers(50)
                os.kill(victim(), signal.SIGKILL)
                killed = time.monotonic()
                outage = load.wait_recovered(killed, timeout=300)
                load.wait_answers(50)
            failed = [a.status for a in load.answers if a.status != 200]
            out[name] = {
                "seconds_to_recover": outage,
                "failed": len(failed),
                "failed_as": sorted({str(status) for status in failed}),
                "sent": len(load.answers),
            }
            wait_ready(public)
    finally:
        stop(server)
    return out


def prepare_version(spec, config, seed: int) -> str:
    from lending_pipeline.ml.features import build_features
    from lending_pipeline.ml.train import labelled, out_of_time_split
    from lending_pipeline_tests.ml.test_scoring import typed_tables
    from lending_pipeline_tests.serving.conftest import register

    tables = typed_tables(spec, days=60, per_day=300, seed=seed)
    features = build_features(spec, tables).features
    frame = labelled(spec, features, tables["outcomes"], dt.date(2025, 7, 1))
    return register(spec, config, out_of_time_split(frame, "application_date", 8, 8), seed=seed)[0]


def active_slot(data: Path) -> str:
    from lending_pipeline.serving.deploy import read_record

    return read_record(data)["active"]["slot"]


def worker_pid(server: int) -> int:
    import psutil

    return psutil.Process(server).children(recursive=True)[0].pid


def report_proxy(row: dict) -> None:
    print(
        f"the proxy adds {row['added_p50_ms']:.2f} ms per request (median of {row['pairs']} "
        f"paired requests; slot p50 {row['direct_p50_ms']:.2f} ms, through the proxy "
        f"{row['proxied_p50_ms']:.2f} ms)"
    )


def report(results: dict) -> None:
    print(f"\nmodel trained on {results['train_rows']:,} applications; bento {results['bento']}")
    print(f"{'endpoint':<22}{'p50 ms':>9}{'p99 ms':>9}{'c16 req/s':>11}{'errors':>8}")
    for name in ("bare", "bare_fast", "bentoml", "bentoml_via_proxy"):
        row = results[name]
        errors = row["c1"]["errors"] + row["c16"]["errors"]
        print(
            f"{name:<22}{row['c1']['p50_ms']:>9.2f}{row['c1']['p99_ms']:>9.2f}"
            f"{row['c16']['throughput_rps']:>11.0f}{errors:>8}"
        )
    for name, row in results["floor"].items():
        print(
            f"{'floor ' + name:<22}{row['c1']['p50_ms']:>9.2f}{row['c1']['p99_ms']:>9.2f}"
            f"{row['c16']['throughput_rps']:>11.0f}{row['c1']['errors'] + row['c16']['errors']:>8}"
        )
    per_request = {
        name: 1e3 / results[name]["c16"]["throughput_rps"]
        for name in ("bare", "bare_fast", "bentoml")
    }
    floor = {name: 1e3 / row["c16"]["throughput_rps"] for name, row in results["floor"].items()}
    results["ms_per_request_c16"] = {**per_request, **{f"floor_{k}": v for k, v in floor.items()}}
    print(
        f"ms per request at c=16: bare {per_request['bare']:.2f}, bare_fast "
        f"{per_request['bare_fast']:.2f}, service {per_request['bentoml']:.2f}; frameworks "
        f"alone: FastAPI {floor['fastapi']:.2f}, BentoML {floor['bentoml']:.2f}"
    )
    service = results["bentoml"]["c16"]["throughput_rps"]
    ratio = service / results["bare"]["c16"]["throughput_rps"]
    results["throughput_ratio"] = ratio
    fast_ratio = service / results["bare_fast"]["c16"]["throughput_rps"]
    results["throughput_ratio_vs_bare_fast"] = fast_ratio
    print(f"throughput vs bare_fast (the project's scoring path, nothing else): {fast_ratio:.2f}x")
    direct, proxied = results["bentoml"], results["bentoml_via_proxy"]
    added = proxied["c1"]["p50_ms"] - direct["c1"]["p50_ms"]
    results["proxy_added_p50_ms"] = added
    p50_ratio = proxied["c1"]["p50_ms"] / direct["c1"]["p50_ms"]
    rps_ratio = proxied["c16"]["throughput_rps"] / direct["c16"]["throughput_rps"]
    print(
        f"the proxy adds {added:.2f} ms at p50 ({p50_ratio:.2f}x the slot's p50); "
        f"c=16 throughput through it {rps_ratio:.2f}x"
    )
    report_proxy(results["proxy_paired"])
    report_shadow(results["shadow"])
    for name, row in results["faults"].items():
        figures_text = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
        )
        print(f"{name:<16}{figures_text}")
    single = results["bentoml"]["c1"]
    figures = {
        "p50_ms": (single["p50_ms"], "<"),
        "p99_ms": (single["p99_ms"], "<"),
        "throughput_ratio": (ratio, ">="),
        "batch_10k_s": (results["batch_10k_s"], "<"),
    }
    for name, (value, sense) in figures.items():
        target = TARGETS[name]
        met = value < target if sense == "<" else value >= target
        print(f"{name:<18}{value:>9.2f}   target {sense} {target:<6} {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
