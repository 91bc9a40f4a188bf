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
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import bentoml  # noqa: E402
import orjson  # noqa: E402
from starlette.responses import Response  # noqa: E402

from lending_pipeline import telemetry  # noqa: E402, F401
from lending_pipeline.ml import audit, pii, tracking  # noqa: E402
from lending_pipeline.ml.scoring import Decision, Scorer, request_columns  # noqa: E402
from lending_pipeline.serving import controls, operations  # noqa: E402
from lending_pipeline.serving.auth import load_callers  # noqa: E402
from lending_pipeline.serving.bundle import SPEC_FILE, Bundle, bundle_dir  # noqa: E402
from lending_pipeline.serving.child import die_with_parent  # noqa: E402
from lending_pipeline.serving.front import FrontDoor  # noqa: E402
from lending_pipeline.serving.logs import withhold_exception_messages  # noqa: E402
from lending_pipeline.serving.openapi import document_bytes  # noqa: E402
from lending_pipeline.serving.requests import RequestError, RequestValidator  # noqa: E402
from lending_pipeline.serving.shadow import Shadow  # noqa: E402
from lending_pipeline.spec import load_spec  # noqa: E402

BUNDLE = Bundle.load(bundle_dir())
SPEC = load_spec(bundle_dir() / SPEC_FILE)
DECISIONS = ("approve", "refer", "decline")
REFER = "refer"
SCORING_ROUTES = ("/score", "/score_batch")
LOG = logging.getLogger("lending_pipeline.serving")
UNAUDITED = "no decision: the audit log cannot be written; retry"


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
    if BUNDLE.challenger:
        challenger_ref = bentoml.models.BentoModel(BUNDLE.challenger["model_tag"])

    def __init__(self):
        die_with_parent(signal.SIGKILL)  # a worker never outlives its server (nor keeps its port)
        withhold_exception_messages()
        logging.getLogger("lending_pipeline.serving").setLevel(logging.INFO)
        key = pii.key_bytes(os.environ.get("LENDING_PII_KEY"))
        load_callers()  # refuse to start without tokens (the middleware loads them lazily)
        self.validate = RequestValidator(SPEC, key)
        self.audit_key = audit.audit_key()
        self.switch = controls.Switch(data_dir(), SPEC.scoring.enabled)
        self.audit = audit.open_store(data_dir(), checkpoint_every=1.0, head_checkpoint_every=10.0)
        self.model_info = {"name": BUNDLE.registered_model, "version": BUNDLE.model_version}
        self.fields = list(request_columns(SPEC))
        self._metrics()
        self.scorer = self._load(self.model_ref, BUNDLE.model_tag, BUNDLE.cutoff, BUNDLE.reference)
        self.shadow = self._shadow()
        # what is loaded by now lives as long as the process: the collector need not walk it
        gc.collect()
        gc.freeze()

    def _load(self, ref, tag: str, cutoff: float, reference: dict) -> Scorer:
        """Load a model before the worker accepts a connection: a worker that is starting
        (first start, or replacing a killed one) is not yet accepting; the server's other workers
        take the connections meanwhile. A model that cannot be loaded stops the worker,
        with the reason in the log."""
        try:
            scorer = Scorer(SPEC, tracking.load_saved(Path(ref.path)), cutoff, reference)
        except Exception as exc:
            LOG.error("model %s could not be loaded: %s", tag, type(exc).__name__)
            raise
        LOG.info("model %s loaded", tag)
        return scorer

    def _shadow(self) -> Shadow | None:
        """The challenger, scored after each answer in a thread (None without one)."""
        challenger = BUNDLE.challenger
        if not challenger:
            return None
        scorer = self._load(
            self.challenger_ref,
            challenger["model_tag"],
            challenger["cutoff"],
            challenger["reference"],
        )
        model = {"name": BUNDLE.registered_model, "version": challenger["model_version"]}
        return Shadow(scorer, model, self.audit, self.shadow_counters)

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
        self.overridden = Total(
            "lending_overrides", "Served decisions overridden, by caller", ["caller", "decision"]
        )
        shadow = Total("lending_shadow", "Challenger scores in the shadow, by outcome", ["outcome"])
        self.shadow_counters = tuple(shadow.labels(o) for o in ("scored", "dropped", "failed"))
        self.seconds = Histogram(
            "lending_scoring_seconds",
            "Validation, scoring, reasons and audit per request",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5),
        )

    def __is_ready__(self) -> bool:
        return self.audit.ready()

    @bentoml.api(route="/score")
    async def score(self, ctx: bentoml.Context, application: Any = None) -> Any:
        """Score one application: probability of default, score, decision, reason codes."""
        began = time.perf_counter()
        try:
            record = self.validate(application)
        except RequestError as exc:
            return _error(ctx, 422, "invalid application", exc.errors)
        request_id = uuid.uuid4().hex
        decision = self.scorer.score([record])[0]
        suspended = self.switch.engaged()
        caller = _caller(ctx)
        entry = self._entry(request_id, caller, application, record, decision, suspended)
        if not self._audited([entry]):
            return _error(ctx, 503, UNAUDITED)
        if self.shadow:
            self.shadow.submit([request_id], [record], [decision.decision])
        self._count([record], [entry["decision"]], began)
        return _json(self._answer(request_id, decision, suspended))

    @bentoml.api(route="/score_batch")
    async def score_batch(self, ctx: bentoml.Context, applications: Any = None) -> Any:
        """Score many applications at once (at most the spec's `scoring.max_batch`)."""
        began = time.perf_counter()
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
        suspended = self.switch.engaged()
        caller = _caller(ctx)
        entries = [
            self._entry(rid, caller, raw, record, decision, suspended)
            for rid, raw, record, decision in zip(
                ids, applications, records, decisions, strict=True
            )
        ]
        if not self._audited(entries):
            return _error(ctx, 503, UNAUDITED)
        if self.shadow:
            self.shadow.submit(ids, records, [d.decision for d in decisions])
        self._count(records, [entry["decision"] for entry in entries], began)
        results = [self._answer(rid, d, suspended) for rid, d in zip(ids, decisions, strict=True)]
        return _json({"batch_id": batch_id, "results": results})

    @bentoml.api(route="/override")
    async def override(self, ctx: bentoml.Context, override: Any = None) -> Any:
        """Override a served decision (admin only): it becomes the decision of record of that
        request in the audit log. Refuses a request id the log does not hold."""
        override = override if isinstance(override, dict) else {}
        request_id = override.get("request_id")
        decision = override.get("decision")
        reason = override.get("reason")
        problems = []
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 80:
            problems.append(_problem("override.request_id", "required", "a served request id"))
        if decision not in DECISIONS:
            message = f"one of {', '.join(DECISIONS)}"
            problems.append(_problem("override.decision", "allowed_values", message))
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            problems.append(_problem("override.reason", "required", "say why (500 characters)"))
        if set(override) - {"request_id", "decision", "reason"}:
            problems.append(_problem("override", "extra_forbidden", "unknown field"))
        if problems:
            return _error(ctx, 422, "invalid override", problems)
        try:
            found = await anyio.to_thread.run_sync(self._decision_of_record, request_id)
        except Exception as exc:
            LOG.error("audit lookup failed (%s)", type(exc).__name__)
            return _error(ctx, 503, "the audit log cannot be read; retry")
        if found is None:
            problem = _problem("override.request_id", "unknown", "no decision with this id")
            return _error(ctx, 404, "unknown request id", [problem])
        caller = _caller(ctx)
        entry = {
            "caller": caller,
            "decision": decision,
            "decision_seq": found["decision_seq"],
            "reason": reason,
            "replaces": found["decision"],
            "request_id": request_id,
        }
        try:
            (written,) = self.audit.append("override", [entry])
        except Exception as exc:
            LOG.error("audit append failed (%s): override refused", type(exc).__name__)
            return _error(ctx, 503, "override not recorded: the audit log cannot be written")
        self.overridden.labels(caller, decision).inc()
        return _json(
            {
                "recorded": True,
                "audit_seq": written.seq,
                "request_id": request_id,
                "decision_of_record": decision,
                "previous_decision": found["decision"],
                "model_decision": found["model_decision"],
            }
        )

    def _decision_of_record(self, request_id: str) -> dict | None:
        return audit.decision_of_record(self.audit_key, self.audit.request_entries(request_id))

    @bentoml.api(route="/kill_switch")
    async def kill_switch(
        self, ctx: bentoml.Context, engaged: Any = None, reason: Any = None
    ) -> Any:
        """Suspend automated decisions (every application answered `refer`) or lift that
        (admin only); audited, shared by every worker and slot, kept across restarts."""
        problems = []
        if not isinstance(engaged, bool):
            problems.append(_problem("engaged", "bool_type", "true or false"))
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            problems.append(_problem("reason", "required", "say why (500 characters)"))
        if problems:
            return _error(ctx, 422, "invalid kill switch request", problems)
        by = f"{_caller(ctx)} (API)"
        try:
            state = await anyio.to_thread.run_sync(
                lambda: controls.set_switch(data_dir(), engaged, reason, by)
            )
        except Exception as exc:
            LOG.error("kill switch not changed (%s)", type(exc).__name__)
            return _error(ctx, 503, "not changed: the audit log cannot be written; retry")
        if not SPEC.scoring.enabled:
            state = {**state, "engaged": True, "note": "scoring.enabled is false in the spec"}
        return _json(state)

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

    def _entry(
        self, request_id: str, caller: str, raw, record: dict, decision: Decision, suspended: bool
    ) -> dict:
        entry = {  # keys (and the record's) in sorted order: the canonical JSON sorts them again
            "caller": caller,
            "decision": REFER if suspended else decision.decision,
            "input_hmac": self.validate.input_hmac(raw),
            "inputs": record,  # dates become ISO text in the canonical JSON
            "model": self.model_info,
            "probability_of_default": decision.probability,
            "reason_codes": [reason["code"] for reason in decision.reasons],
            "request_id": request_id,
            "score": decision.score,
        }
        if suspended:  # the kill switch: a person decides; what the model would have decided
            entry["model_decision"] = decision.decision
            entry["suspended"] = True
        return entry

    def _answer(self, request_id: str, decision: Decision, suspended: bool) -> dict[str, Any]:
        return {
            "request_id": request_id,
            "model": self.model_info,
            "probability_of_default": round(decision.probability, 6),
            "score": decision.score,
            "decision": REFER if suspended else decision.decision,
            "reason_codes": decision.reasons,
            "suspended": suspended,
        }

    def _count(self, records: list[dict], decisions: list[str], began: float) -> None:
        self.scored.inc(len(records))
        for outcome, count in Counter(decisions).items():
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


def _problem(field: str, rule: str, message: str) -> dict[str, str]:
    return {"field": field, "rule": rule, "message": message}


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
