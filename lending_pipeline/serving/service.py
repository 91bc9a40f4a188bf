"""The BentoML scoring service: one champion model version, explained and audited decisions.

Run from a built Bento (`make serve`, or `bentoml serve <tag>`); the Bento's `serving.json` names
the model and carries its cutoff and reason-code references, `spec.yaml` the spec it was trained
for. Every request passes the front door (`front.FrontDoor`: routes, authentication, roles,
size, JSON shape) first; every decision is appended to the audit log before it is answered, and
none is answered when that append fails (503). Exceptions are logged without their message
(`logs.py`): it may quote request data.
"""

import os

# scikit-learn's trees for large batches use OpenMP threads: let them sleep at barriers (spinning
# ones ran 8x slower than one thread while another process kept the second core busy)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gc  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import bentoml  # noqa: E402
import orjson  # noqa: E402
import pydantic  # noqa: E402
from starlette.responses import Response  # noqa: E402

from lending_pipeline import telemetry  # noqa: E402, F401
from lending_pipeline.ml import audit, pii, tracking  # noqa: E402
from lending_pipeline.ml.scoring import Decision, Scorer, request_columns  # noqa: E402
from lending_pipeline.serving import operations  # noqa: E402
from lending_pipeline.serving.auth import load_callers  # noqa: E402
from lending_pipeline.serving.bundle import SPEC_FILE, Bundle, bundle_dir  # noqa: E402
from lending_pipeline.serving.child import die_with_parent  # noqa: E402
from lending_pipeline.serving.front import FrontDoor  # noqa: E402
from lending_pipeline.serving.logs import withhold_exception_messages  # noqa: E402
from lending_pipeline.serving.openapi import document_bytes  # noqa: E402
from lending_pipeline.serving.requests import RequestError, RequestValidator  # noqa: E402
from lending_pipeline.spec import load_spec  # noqa: E402

BUNDLE = Bundle.load(bundle_dir())
SPEC = load_spec(bundle_dir() / SPEC_FILE)
DECISIONS = ("approve", "refer", "decline")
SCORING_ROUTES = ("/score", "/score_batch")
LOG = logging.getLogger("lending_pipeline.serving")
UNAUDITED = "no decision: the audit log cannot be written; retry"


class ModelInfo(pydantic.BaseModel):
    name: str
    version: str


class ReasonCode(pydantic.BaseModel):
    code: str
    feature: str
    text: str


class Answer(pydantic.BaseModel):
    """A scored application (the shape of `/score`'s answer, for the OpenAPI document)."""

    request_id: str
    model: ModelInfo
    probability_of_default: float
    score: int
    decision: str
    reason_codes: list[ReasonCode]


class BatchAnswer(pydantic.BaseModel):
    batch_id: str
    results: list[Answer]


def data_dir() -> Path:
    return Path(os.environ.get("LENDING_DATA_DIR", "data"))


@bentoml.service(
    name="lending_scoring",
    workers=int(os.environ.get("LENDING_SERVING_WORKERS", "2")),  # one killed, one answering
    traffic={"timeout": 60},
    tracing={"excluded_urls": list(SCORING_ROUTES)},  # no span exporter: spans would cost only
    logging={"access": {"enabled": False}},  # the front door writes an access log without values
)
class Scoring:
    model_ref = bentoml.models.BentoModel(BUNDLE.model_tag)

    def __init__(self):
        die_with_parent(signal.SIGKILL)  # a worker never outlives its server (nor keeps its port)
        withhold_exception_messages()
        logging.getLogger("lending_pipeline.serving").setLevel(logging.INFO)
        key = pii.key_bytes(os.environ.get("LENDING_PII_KEY"))
        load_callers()  # refuse to start without tokens (the middleware loads them lazily)
        self.validate = RequestValidator(SPEC, key)
        self.audit = audit.open_store(data_dir(), checkpoint_every=1.0, head_checkpoint_every=10.0)
        self.model_info = {"name": BUNDLE.registered_model, "version": BUNDLE.model_version}
        self.fields = list(request_columns(SPEC))
        self.scorer: Scorer | None = None
        self._metrics()
        threading.Thread(target=self._load, name="load-model", daemon=True).start()

    def _load(self) -> None:
        """Load the model in the background; /readyz stays 503 until it is in (or forever, with
        the reason in the log, when it cannot be loaded)."""
        try:
            model = tracking.load_saved(Path(self.model_ref.path))
            scorer = Scorer(SPEC, model, BUNDLE.cutoff, BUNDLE.reference)
        except Exception as exc:
            LOG.error("model %s could not be loaded: %s", BUNDLE.model_tag, type(exc).__name__)
            raise
        # what is loaded by now lives as long as the process: the collector need not walk it
        gc.collect()
        gc.freeze()
        self.scorer = scorer
        LOG.info("model %s loaded", BUNDLE.model_tag)

    def _metrics(self) -> None:
        from prometheus_client import Counter as Total
        from prometheus_client import Histogram

        decided = Total("lending_decisions", "Decisions made", ["decision"])
        self.decided = {outcome: decided.labels(outcome) for outcome in DECISIONS}
        missing = Total(
            "lending_missing_fields", "Applications scored with a field missing", ["field"]
        )
        self.missing = {name: missing.labels(name) for name in self.fields}
        self.scored = Total("lending_applications", "Applications scored")
        self.seconds = Histogram(
            "lending_scoring_seconds",
            "Validation, scoring, reasons and audit per request",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5),
        )

    def __is_ready__(self) -> bool:
        return self.scorer is not None and self.audit.ready()

    @bentoml.api(route="/score", output_spec=Answer)
    async def score(self, ctx: bentoml.Context, application: Any = None) -> Response:
        """Score one application: probability of default, score, decision, reason codes."""
        began = time.perf_counter()
        if self.scorer is None:
            return _error(ctx, 503, "the model is still loading")
        try:
            record = self.validate(application)
        except RequestError as exc:
            return _error(ctx, 422, "invalid application", exc.errors)
        request_id = uuid.uuid4().hex
        decision = self.scorer.score([record])[0]
        caller = _caller(ctx)
        if not self._audited([self._entry(request_id, caller, application, record, decision)]):
            return _error(ctx, 503, UNAUDITED)
        self._count([record], [decision], began)
        return _json(self._answer(request_id, decision))

    @bentoml.api(route="/score_batch", output_spec=BatchAnswer)
    async def score_batch(self, ctx: bentoml.Context, applications: Any = None) -> Response:
        """Score many applications at once (at most the spec's `scoring.max_batch`)."""
        began = time.perf_counter()
        if self.scorer is None:
            return _error(ctx, 503, "the model is still loading")
        limit = SPEC.scoring.max_batch
        if not isinstance(applications, list) or not 0 < len(applications) <= limit:
            rule = {"field": "applications", "rule": "batch_size"}
            return _error(ctx, 422, "invalid batch", [{**rule, "message": f"send 1 to {limit}"}])
        try:
            records = self.validate.many(applications)
        except RequestError as exc:
            return _error(ctx, 422, "invalid applications", exc.errors[:50])
        batch_id = uuid.uuid4().hex
        ids = [f"{batch_id}-{i}" for i in range(len(records))]
        decisions = self.scorer.score(records)
        caller = _caller(ctx)
        entries = [
            self._entry(rid, caller, raw, record, decision)
            for rid, raw, record, decision in zip(
                ids, applications, records, decisions, strict=True
            )
        ]
        if not self._audited(entries):
            return _error(ctx, 503, UNAUDITED)
        self._count(records, decisions, began)
        results = [self._answer(rid, d) for rid, d in zip(ids, decisions, strict=True)]
        return _json({"batch_id": batch_id, "results": results})

    @bentoml.api(route="/override")
    async def override(self, ctx: bentoml.Context, override: Any = None) -> Any:
        """Record a manual decision override (admin only): request id, decision, reason."""
        override = override if isinstance(override, dict) else {}
        request_id = str(override.get("request_id", ""))[:80]
        decision = override.get("decision")
        reason = str(override.get("reason", ""))[:500]
        if not request_id or decision not in DECISIONS or not reason:
            rule = {"field": "override", "rule": "required"}
            message = f"give request_id, decision ({', '.join(DECISIONS)}) and reason"
            return _error(ctx, 422, "invalid override", [{**rule, "message": message}])
        entry = {
            "request_id": request_id,
            "decision": decision,
            "reason": reason,
            "caller": _caller(ctx),
        }
        (written,) = self.audit.append("override", [entry])
        return {"recorded": True, "audit_seq": written.seq}

    @bentoml.api(route="/rollback")
    async def rollback(
        self, ctx: bentoml.Context, reason: Any = None, to_version: Any = None
    ) -> Any:
        """Make the previous model version champion and serve it (admin only). With
        `to_version`, a retry is harmless: nothing moves when it is already the champion."""
        if not isinstance(reason, str) or not reason.strip():
            rule = {"field": "reason", "rule": "required", "message": "say why"}
            return _error(ctx, 422, "invalid rollback", [rule])
        data = data_dir()
        config = tracking.registry_config(data, BUNDLE.registered_model)
        history = tracking.history_path(data)
        actor = f"{_caller(ctx)} (API): {reason[:200]}"
        try:
            done = await anyio.to_thread.run_sync(
                lambda: operations.rollback(
                    SPEC, config, history, data, actor, str(to_version) if to_version else None
                )
            )
        except operations.RollbackError as exc:
            return _error(ctx, 409, str(exc))
        return done

    def _audited(self, entries: list[dict]) -> bool:
        """Append decision entries to the audit log; False (logged, without values) when that
        fails: the decisions must then not be answered."""
        try:
            self.audit.append("decision", entries)
        except Exception as exc:
            LOG.error(
                "audit append failed (%s): %d decision(s) refused", type(exc).__name__, len(entries)
            )
            return False
        return True

    def _entry(self, request_id: str, caller: str, raw, record: dict, decision: Decision) -> dict:
        return {  # keys (and the record's) in sorted order: the canonical JSON sorts them again
            "caller": caller,
            "decision": decision.decision,
            "input_hmac": self.validate.input_hmac(raw),
            "inputs": record,  # dates become ISO text in the canonical JSON
            "model": self.model_info,
            "probability_of_default": decision.probability,
            "reason_codes": [reason["code"] for reason in decision.reasons],
            "request_id": request_id,
            "score": decision.score,
        }

    def _answer(self, request_id: str, decision: Decision) -> dict[str, Any]:
        return {
            "request_id": request_id,
            "model": self.model_info,
            "probability_of_default": round(decision.probability, 6),
            "score": decision.score,
            "decision": decision.decision,
            "reason_codes": decision.reasons,
        }

    def _count(self, records: list[dict], decisions: list[Decision], began: float) -> None:
        self.scored.inc(len(records))
        for outcome, count in Counter(d.decision for d in decisions).items():
            self.decided[outcome].inc(count)
        fields = self.fields
        missing = Counter(name for record in records for name in fields if record[name] is None)
        for name, count in missing.items():
            self.missing[name].inc(count)
        self.seconds.observe(time.perf_counter() - began)


def _caller(ctx: bentoml.Context) -> str:
    return ctx.request.scope.get("state", {}).get("caller", "unknown")


def _json(body: dict) -> Response:
    """A JSON answer serialised here: BentoML's own output path rebuilds the output model's
    JSON schema for every answer (about a tenth of a scoring request)."""
    return Response(orjson.dumps(body), media_type="application/json")


def _error(ctx: bentoml.Context, status: int, message: str, detail: list | None = None) -> Response:
    """An error answer in the front door's shape; the status goes through the context (BentoML
    applies it last)."""
    ctx.response.status_code = status
    if status == 503:
        ctx.response.headers["retry-after"] = "1"
    return _json({"error": message, "detail": detail or []})


Scoring.add_asgi_middleware(
    FrontDoor,
    max_body_bytes=SPEC.scoring.max_body_bytes,
    known_fields=tuple(request_columns(SPEC)),
    openapi=document_bytes(SPEC),
)
