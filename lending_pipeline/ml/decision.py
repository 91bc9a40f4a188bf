"""The decision rule: approve, refer or decline from a probability of default.

One rule for evaluation, fairness, business metrics and serving, so the approval rate and the
fairness that were gated are those of the decisions served. Ties are settled once, here:

- approve when PD < cutoff (strictly below; PD == cutoff is not approved),
- decline when PD > decline_above (the spec's hard limit, `scoring.decline_above_pd`),
- refer otherwise (cutoff <= PD <= decline_above).

Without a `decline_above` limit every application that is not approved is declined. For the
gated metrics only "approved or not" matters: refer and decline both count as not approved.
"""

from __future__ import annotations

import numpy as np

APPROVE, REFER, DECLINE = "approve", "refer", "decline"
DECISIONS = (APPROVE, REFER, DECLINE)


def approved(prob, cutoff: float) -> np.ndarray:
    """True where an application is approved: PD strictly below the cutoff."""
    return np.asarray(prob, dtype=float) < float(cutoff)


def decide(prob: float, cutoff: float, decline_above: float | None = None) -> str:
    """The decision for one probability of default."""
    if decline_above is not None and prob > decline_above:
        return DECLINE
    if prob < cutoff:
        return APPROVE
    return DECLINE if decline_above is None else REFER


def decide_many(prob, cutoff: float, decline_above: float | None = None) -> list[str]:
    """The decisions for many probabilities (the same rule as `decide`)."""
    p = np.asarray(prob, dtype=float)
    out = np.full(p.shape, DECLINE if decline_above is None else REFER, dtype=object)
    out[approved(p, cutoff)] = APPROVE
    if decline_above is not None:
        out[p > decline_above] = DECLINE
    return out.tolist()
