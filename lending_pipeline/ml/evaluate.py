"""Evaluation on the out-of-time split: reports, promotion gates, integrity, the model card."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from lending_pipeline.ml.metrics import score_report
from lending_pipeline.ml.protected import protected_groups
from lending_pipeline.spec import GateSpec, PipelineSpec

# gate name: (direction, rationale shown in the model card and docs/spec.md)
GATES = {
    "min_roc_auc": (">=", "ranking power a credit decision can rely on"),
    "min_ks": (">=", "separation of goods and bads at the best threshold"),
    "max_ece": ("<=", "probabilities that mean what they say (pricing, expected loss)"),
    "min_adverse_impact_ratio": (">=", "four-fifths rule on approval rates per protected group"),
    "max_auc_drop_vs_champion": ("<=", "no regression against the model in production"),
    "min_auc_margin_over_baseline": (">=", "complexity must beat an interpretable scorecard"),
}
GATED_METRICS = ("roc_auc", "ks", "ece")


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    actual: float | None
    threshold: float
    direction: str
    detail: str

    def describe(self) -> str:
        actual = "n/a" if self.actual is None else f"{self.actual:.4f}"
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{self.gate}: {verdict} (actual {actual} {self.direction} {self.threshold:g}); "
            f"{self.detail}"
        )


def report(spec: PipelineSpec, frame: pd.DataFrame, prob: np.ndarray, cutoff: float) -> dict:
    """The full score report of one model on one labelled frame."""
    groups = protected_groups(spec, frame)
    exposure_column = spec.model.exposure_column
    exposure = frame[exposure_column].to_numpy(dtype=float) if exposure_column else None
    return score_report(
        frame["target"].to_numpy(),
        prob,
        cutoff,
        groups=groups,
        exposure=exposure,
        min_group_size=spec.gates.min_group_size,
        loss_given_default=spec.model.loss_given_default,
    )


def min_adverse_impact(candidate: dict) -> tuple[float, str]:
    ratios = [
        (values["adverse_impact"]["min_ratio"], f"{name}={values['adverse_impact']['min_group']}")
        for name, values in candidate["fairness"].items()
    ]
    return min(ratios) if ratios else (1.0, "no protected attributes")


def unmeasured_fairness(candidate: dict, min_group_size: int) -> list[str]:
    """Protected attributes on which fairness measured nothing (fewer than two groups of at
    least `min_group_size`), each with its group sizes."""
    out = []
    for name, values in candidate["fairness"].items():
        impact = values["adverse_impact"]
        if impact.get("measurable", len(impact["rates"]) >= 2):
            continue
        sizes = sorted(impact.get("group_sizes", {}).items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{g}: {n}" for g, n in sizes[:8])
        more = f", and {len(sizes) - 8} more" if len(sizes) > 8 else ""
        out.append(
            f"{name} has {len(impact['rates'])} group(s) of at least {min_group_size} "
            f"(group sizes {shown}{more})"
        )
    return out


def evaluate_gates(
    gates: GateSpec, candidate: dict, baseline: dict, champion: dict | None
) -> list[GateResult]:
    """Every gate of the spec, with actual vs threshold. A fairness gate that could compare no
    two groups of a protected attribute fails as not measurable (it measured nothing)."""
    air, air_group = min_adverse_impact(candidate)
    unmeasured = unmeasured_fairness(candidate, gates.min_group_size)
    if champion is None:
        drop, drop_detail = None, "no champion yet: nothing to regress against"
    else:
        drop = champion["roc_auc"] - candidate["roc_auc"]
        drop_detail = (
            f"champion AUC {champion['roc_auc']:.4f}, candidate {candidate['roc_auc']:.4f}"
        )
    actuals = {
        "min_roc_auc": (candidate["roc_auc"], "out-of-time ROC-AUC"),
        "min_ks": (candidate["ks"], "out-of-time KS"),
        "max_ece": (candidate["ece"], "expected calibration error, 10 quantile bins"),
        "min_adverse_impact_ratio": (air, f"lowest approval-rate ratio: {air_group}"),
        "max_auc_drop_vs_champion": (drop, drop_detail),
        "min_auc_margin_over_baseline": (
            candidate["roc_auc"] - baseline["roc_auc"],
            f"logistic scorecard AUC {baseline['roc_auc']:.4f}",
        ),
    }
    results = []
    for gate, (direction, _) in GATES.items():
        actual, detail = actuals[gate]
        threshold = getattr(gates, gate)
        if gate == "min_adverse_impact_ratio" and unmeasured:
            detail = "not measurable: " + "; ".join(unmeasured)
            results.append(GateResult(gate, False, None, threshold, direction, detail))
            continue
        if actual is None:
            passed = True
        else:
            passed = actual >= threshold if direction == ">=" else actual <= threshold
        results.append(GateResult(gate, bool(passed), actual, threshold, direction, detail))
    return results


def integrity_differences(
    spec: PipelineSpec, predictions: pd.DataFrame, logged: dict, cutoff: float, tol: float = 1e-9
) -> dict[str, tuple[float, float]]:
    """Recompute the gated metrics of the candidate (ROC-AUC, KS, ECE and the lowest adverse
    impact ratio) from stored predictions; return those that differ as (logged, recomputed)."""
    recomputed = report(spec, predictions, predictions["prob"].to_numpy(), cutoff)
    pairs = {name: (logged[name], recomputed[name]) for name in GATED_METRICS}
    pairs["min_adverse_impact_ratio"] = (
        min_adverse_impact(logged)[0],
        min_adverse_impact(recomputed)[0],
    )
    return {
        name: pair
        for name, pair in pairs.items()
        if not math.isclose(*pair, rel_tol=0, abs_tol=tol)
    }


def model_card(
    spec: PipelineSpec,
    version: str,
    lineage: dict[str, str],
    reports: dict[str, dict | None],
    gates: list[GateResult],
    cutoff: float,
) -> str:
    """A Markdown model card for risk and compliance readers."""
    candidate = reports["candidate"]
    lines = [
        f"# Model card: {spec.name} v{version}",
        "",
        "## Intended use",
        f"Probability of default for {spec.description.strip() or spec.name} applications, "
        f"within {spec.target.maturity_days} days. Applications with a probability of default "
        f"at or above {cutoff:.4f} are declined (cutoff chosen on the validation split). "
        "Not for other products, populations or horizons without revalidation.",
        "",
        "## Data and lineage",
        *[f"- {k}: `{v}`" for k, v in sorted(lineage.items())],
        "",
        "## Out-of-time performance",
        "| metric | candidate | champion | scorecard baseline |",
        "|---|---|---|---|",
    ]
    metrics = ["roc_auc", "gini", "ks", "pr_auc", "brier", "ece", "approval_rate"]
    metrics += ["bad_rate_among_approved", "expected_loss_among_approved"]
    for metric in metrics:
        cells = [_cell(reports.get(role), metric) for role in ("candidate", "champion", "baseline")]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Gates",
        "| gate | actual | threshold | result | why |",
        "|---|---|---|---|---|",
    ]
    for gate in gates:
        actual = "n/a" if gate.actual is None else f"{gate.actual:.4f}"
        result = "pass" if gate.passed else "**FAIL**"
        lines.append(
            f"| {gate.gate} | {actual} | {gate.direction} {gate.threshold:g} | {result} | "
            f"{GATES[gate.gate][1]} |"
        )
    lines += ["", "## Fairness (approval rates by protected attribute)"]
    lines += [
        "| attribute | group | applications | approval rate | ratio to highest |",
        "|---|---|---|---|---|",
    ]
    for name, values in candidate["fairness"].items():
        impact = values["adverse_impact"]
        sizes = impact.get("group_sizes", {})
        rates = {**impact.get("small_group_rates", {}), **impact["rates"]}
        for group, rate in sorted(rates.items()):
            ratio = impact["ratios"].get(group)
            ratio_text = "n/a (small group: not gated)" if ratio is None else f"{ratio:.3f}"
            count = sizes.get(group, "")
            lines.append(f"| {name} | {group} | {count} | {rate:.3f} | {ratio_text} |")
    small = {
        name: values["adverse_impact"].get("excluded_small_groups", [])
        for name, values in candidate["fairness"].items()
    }
    if any(small.values()):
        lines += [
            "",
            f"Small groups (fewer than {spec.gates.min_group_size} test applications; their "
            "rates are too noisy to gate and are shown for review only):",
        ]
        for name, groups in small.items():
            sizes = candidate["fairness"][name]["adverse_impact"].get("group_sizes", {})
            if groups:
                listed = ", ".join(f"{g} ({sizes.get(g, '?')})" for g in sorted(groups))
                lines.append(f"- {name}: {listed}")
    lines += ["", "Equal opportunity (approval rate among applicants who repaid), gap max - min:"]
    for name, values in candidate["fairness"].items():
        lines.append(f"- {name}: {values['tpr_difference']['difference']:.3f}")
    lines += [
        "",
        "## Limitations",
        "- Trained on applications that were approved and matured; performance on declined or "
        "unseen applicant segments is unknown (reject inference not applied).",
        "- Protected attributes are used for measurement only, never as inputs; proxies in the "
        "inputs can still carry them — the adverse impact gate measures the outcome.",
        data_limitation(spec),
    ]
    return "\n".join(lines) + "\n"


def data_limitation(spec: PipelineSpec) -> str:
    """The card's statement about the data, from the spec's `data` section and its sources."""
    sources = ", ".join(
        f"{s.name} ({s.description.strip()})" if s.description.strip() else s.name
        for s in spec.sources
    )
    where = f" {spec.data.source.strip()}." if spec.data.source.strip() else ""
    if spec.data.kind == "synthetic":
        return (
            f"- Synthetic (generated) data:{where} figures describe the pipeline, not a real "
            f"portfolio. Sources: {sources}."
        )
    if spec.data.kind == "real":
        return f"- Real data:{where} sources: {sources}. Figures hold for this population only."
    return (
        f"- The spec does not say whether the data is real or synthetic (`data.kind`); "
        f"sources: {sources}."
    )


def _cell(values: dict | None, metric: str) -> str:
    if not values or values.get(metric) is None:
        return "—"
    return f"{values[metric]:.4f}"


def gates_as_dicts(gates: list[GateResult]) -> list[dict]:
    return [asdict(g) for g in gates]
