"""The challenger scored in the champion's shadow: after the answer, in a thread of the worker.

The answer path only puts the request's validated record on a bounded queue (no scoring, no I/O;
a full queue drops the shadow score and counts it). A thread takes what is queued in batches,
scores it with the challenger and appends one `shadow` entry per request to the audit log, beside
the served decision (same `request_id`): the challenger's probability, score and decision, and
the champion's decision it would have replaced. Nothing the challenger does reaches a client.
"""

from __future__ import annotations

import logging
import queue
import threading

from lending_pipeline.ml.scoring import Decision, Scorer

LOG = logging.getLogger("lending_pipeline.serving")
BATCH = 512


class Shadow:
    def __init__(self, scorer: Scorer, model: dict, store, counters, limit: int = 20_000):
        self.scorer, self.model, self.store = scorer, model, store
        self.scored, self.dropped, self.failed = counters
        self.queue: queue.Queue = queue.Queue(maxsize=limit)
        self.idle = threading.Event()
        self.idle.set()
        threading.Thread(target=self._run, name="shadow", daemon=True).start()

    def submit(self, request_ids: list[str], records: list[dict], decisions: list[str]) -> None:
        """Queue what was answered; never blocks."""
        try:
            self.queue.put_nowait((request_ids, records, decisions))
            self.idle.clear()
        except queue.Full:
            self.dropped.inc(len(request_ids))

    def _run(self) -> None:
        while True:
            ids, records, served = [], [], []
            item = self.queue.get()
            while item is not None:
                ids += item[0]
                records += item[1]
                served += item[2]
                item = self.queue.get_nowait() if len(ids) < BATCH and self.queue.qsize() else None
            try:
                self._score(ids, records, served)
            except Exception as exc:
                LOG.error("shadow scoring failed (%s): %d request(s)", type(exc).__name__, len(ids))
                self.failed.inc(len(ids))
            if self.queue.empty():
                self.idle.set()

    def _score(self, ids: list[str], records: list[dict], served: list[str]) -> None:
        decisions = self.scorer.score(records)
        self.store.append(
            "shadow",
            [
                _entry(rid, self.model, d, s)
                for rid, d, s in zip(ids, decisions, served, strict=True)
            ],
        )
        self.scored.inc(len(ids))


def _entry(request_id: str, model: dict, decision: Decision, served: str) -> dict:
    return {
        "champion_decision": served,
        "decision": decision.decision,
        "model": model,
        "probability_of_default": decision.probability,
        "reason_codes": [reason["code"] for reason in decision.reasons],
        "request_id": request_id,
        "score": decision.score,
    }
