"""Evaluation on the out-of-time split: reports, promotion gates, integrity, the model card."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from lending_pipeline.ml.metrics import score_report
from lending_pipeline.ml.protected import protected_groups
from lending_pipeline.ml.uncertainty import Interval, bootstrap_intervals
from lending_pipeline.ml.validator_metrics import (
    at_same_approval_rate,
    group_calibration,
    proxy_report,
)
from lending_pipeline.spec import GateSpec, PipelineSpec

# gate name: (direction, rationale shown in the model card and docs/spec.md)
GATES = {
    "min_roc_auc": (">=", "ranking power a credit decision can rely on"),
    "min_ks": (">=", "separation of goods and bads at the best threshold"),
    "max_ece": ("<=", "probabilities that mean what they say (pricing, expected loss)"),
    "min_adverse_impact_ratio": (">=", "four-fifths rule on approval rates per protected group"),
    "max_auc_drop_vs_champion": ("<=", "no regression against the model in production"),
    "min_auc_margin_over_baseline": (">=", "complexity must beat an interpretable scorecard"),
    "min_brier_skill": (">=", "probabilities must beat quoting the portfolio's default rate"),
    "max_tpr_difference": ("<=", "equal opportunity: applicants who repay are approved alike"),
    "min_auc_gain_over_champion": (">", "a challenger replaces the champion by ranking better"),
}
GATED_METRICS = ("roc_auc", "ks", "ece")
# gate: the metric of `ml/uncertainty.py` whose bootstrap interval it has
GATE_METRIC = {
    "min_roc_auc": "roc_auc",
    "min_ks": "ks",
    "max_ece": "ece",
    "min_adverse_impact_ratio": "min_adverse_impact_ratio",
    "max_auc_drop_vs_champion": "auc_drop_vs_champion",
    "min_auc_margin_over_baseline": "auc_margin_over_baseline",
    "min_brier_skill": "brier_skill",
    "max_tpr_difference": "max_tpr_difference",
    "min_auc_gain_over_champion": "auc_gain_over_champion",
}
CONSERVATIVE = "conservative_bound"


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    actual: float | None
    threshold: float
    direction: str
    detail: str
    low: float | None = None
    high: float | None = None
    judged_on: str = "estimate"

    @property
    def judged(self) -> float | None:
        """The value compared with the threshold: the estimate or the interval's bound."""
        if self.judged_on != CONSERVATIVE:
            return self.actual
        return self.low if self.direction.startswith(">") else self.high

    def interval_text(self) -> str:
        return "n/a" if self.low is None else f"[{self.low:.4f}, {self.high:.4f}]"

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        if self.actual is None:  # nothing to measure (e.g. no champion yet): the detail says why
            limit = f"{self.direction} {self.threshold:g}"
            return f"{self.gate}: {verdict}, not measured ({limit}); {self.detail}"
        actual = f"{self.actual:.4f}"
        judged = ""
        if self.judged_on == CONSERVATIVE:
            judged = f", judged on the interval's bound {self.judged:.4f}"
        return (
            f"{self.gate}: {verdict} (actual {actual} {self.direction} {self.threshold:g}; "
            f"interval {self.interval_text()}{judged}); {self.detail}"
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
    gates: GateSpec,
    candidate: dict,
    baseline: dict,
    champion: dict | None,
    intervals: dict[str, Interval] | None = None,
) -> list[GateResult]:
    """Every gate of the spec, with actual vs threshold and the metric's bootstrap interval; a
    gate the spec judges on its conservative bound (`gates.judge_on`) compares that bound. A
    fairness gate that could compare no two groups of a protected attribute fails as not
    measurable (it measured nothing)."""
    air, air_group = min_adverse_impact(candidate)
    unmeasured = unmeasured_fairness(candidate, gates.min_group_size)
    if champion is None:
        drop, drop_detail = None, "no champion yet: nothing to regress against"
        gain, gain_detail = None, "no champion yet: nothing to beat"
    else:
        drop = champion["roc_auc"] - candidate["roc_auc"]
        drop_detail = (
            f"champion AUC {champion['roc_auc']:.4f}, candidate {candidate['roc_auc']:.4f}"
        )
        gain, gain_detail = -drop, drop_detail
        if not gates.challenger_must_beat_champion:
            gain = None
            gain_detail = "not required: gates.challenger_must_beat_champion is false"
    tpr_gap, tpr_detail = max_tpr_difference(candidate)
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
        "min_brier_skill": (
            candidate["brier_skill"],
            f"Brier {candidate['brier']:.4f} vs the no-skill forecast at default rate "
            f"{candidate['bad_rate']:.4f}",
        ),
        "max_tpr_difference": (tpr_gap, tpr_detail),
        "min_auc_gain_over_champion": (gain, gain_detail),
    }
    results = []
    for gate, (direction, _) in GATES.items():
        actual, detail = actuals[gate]
        threshold = getattr(gates, gate)
        if gate == "min_adverse_impact_ratio" and unmeasured:
            detail = "not measurable: " + "; ".join(unmeasured)
            results.append(GateResult(gate, False, None, threshold, direction, detail))
            continue
        interval = (intervals or {}).get(GATE_METRIC.get(gate, ""))
        low, high = (
            (interval.low, interval.high) if interval and actual is not None else (None,) * 2
        )
        judged_on = gates.judge_on.get(gate, "estimate")
        if judged_on == CONSERVATIVE and low is None:
            judged_on = "estimate"
            detail += "; no interval to judge on (estimate used)"
        result = GateResult(gate, True, actual, threshold, direction, detail, low, high, judged_on)
        value = result.judged
        if value is not None:
            passed = {">=": value >= threshold, ">": value > threshold}.get(
                direction, value <= threshold
            )
            result = replace(result, passed=bool(passed))
        elif gate == "max_tpr_difference":
            result = replace(result, passed=False)  # protected attributes, nothing measured
        results.append(result)
    return results


def max_tpr_difference(candidate: dict) -> tuple[float | None, str]:
    """The largest equal-opportunity gap over protected attributes with at least two groups of
    enough good applicants; None (not measurable) when attributes exist but none has two."""
    fairness = candidate["fairness"]
    if not fairness:
        return 0.0, "no protected attributes"
    measured = {
        name: values["tpr_difference"]
        for name, values in fairness.items()
        if len(values["tpr_difference"]["rates"]) >= 2
    }
    if not measured:
        sizes = ", ".join(
            f"{name}: fewer than two groups of enough good applicants" for name in fairness
        )
        return None, f"NOT MEASURABLE ({sizes})"
    name = max(measured, key=lambda n: measured[n]["difference"])
    rates = measured[name]["rates"]
    low, high = min(rates, key=rates.get), max(rates, key=rates.get)
    return (
        measured[name]["difference"],
        f"approval rate among goods, {name}: {high} {rates[high]:.3f} vs {low} {rates[low]:.3f}",
    )


def gate_intervals(
    spec: PipelineSpec,
    frame: pd.DataFrame,
    probs: dict[str, np.ndarray],
    cutoff: float,
    reports: dict[str, dict | None],
) -> dict[str, Interval]:
    """Bootstrap intervals of the candidate's gated metrics on the out-of-time frame (none when
    `gates.bootstrap_resamples` is 0), seeded by the model seed; estimates from the reports."""
    gates = spec.gates
    if gates.bootstrap_resamples == 0:
        return {}
    candidate = reports["candidate"]
    estimates = {name: candidate[name] for name in ("roc_auc", "ks", "ece", "brier_skill")}
    estimates["min_adverse_impact_ratio"] = min_adverse_impact(candidate)[0]
    if reports.get("baseline"):
        estimates["auc_margin_over_baseline"] = (
            candidate["roc_auc"] - reports["baseline"]["roc_auc"]
        )
    if reports.get("champion"):
        estimates["auc_drop_vs_champion"] = reports["champion"]["roc_auc"] - candidate["roc_auc"]
        estimates["auc_gain_over_champion"] = -estimates["auc_drop_vs_champion"]
    gaps = [v["tpr_difference"]["difference"] for v in candidate["fairness"].values()]
    if gaps:
        estimates["max_tpr_difference"] = max(gaps)
    prob = probs["candidate"]
    return bootstrap_intervals(
        frame["target"].to_numpy(),
        probs,
        prob < cutoff,  # approved: the score report's rule (prob < cutoff)
        {a: frame[a].astype(object).to_numpy() for a in spec.protected_attributes},
        estimates=estimates,
        min_group_size=gates.min_group_size,
        resamples=gates.bootstrap_resamples,
        level=gates.confidence_level,
        seed=spec.model.seed,
    )


def model_card(
    spec: PipelineSpec,
    version: str,
    lineage: dict[str, str],
    reports: dict[str, dict | None],
    gates: list[GateResult],
    cutoff: float,
    intervals: dict[str, Interval] | None = None,
    figures: dict | None = None,
) -> str:
    """A Markdown model card for risk and compliance readers (`figures`: `validator_figures`)."""
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
        "| gate | actual | bootstrap interval | judged on | threshold | result | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for gate in gates:
        actual = "n/a" if gate.actual is None else f"{gate.actual:.4f}"
        result = "pass" if gate.passed else "**FAIL**"
        lines.append(
            f"| {gate.gate} | {actual} | {gate.interval_text()} | {gate.judged_on} | "
            f"{gate.direction} {gate.threshold:g} | {result} | {GATES[gate.gate][1]} |"
        )
    lines += ["", *uncertainty_section(spec, intervals or {})]
    lines += validator_sections(figures or {})
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
        f"- {data_statement(spec)}",
    ]
    return "\n".join(lines) + "\n"


DATA_KINDS = {
    "synthetic": "Synthetic data: the figures describe the pipeline and the generator, not a "
    "real portfolio.",
    "public": "A public dataset: the figures describe that dataset's population and period, "
    "not this lender's applicants.",
    "production": "Production records of this lender's applications and outcomes.",
    "unspecified": "The spec does not declare what the data is (`data_origin.kind`): the "
    "figures cannot be read as describing a real portfolio until it does.",
}


def data_statement(spec: PipelineSpec) -> str:
    """What the data is, from the spec's `data_origin` (kind and description) and sources."""
    origin = spec.data_origin
    sources = ", ".join(s.name for s in spec.sources)
    described = f" {origin.description.strip()}" if origin.description.strip() else ""
    return f"Data kind: {origin.kind} (sources: {sources}). {DATA_KINDS[origin.kind]}{described}"


def validator_figures(
    spec: PipelineSpec, frame: pd.DataFrame, probs: dict[str, np.ndarray], candidate: dict
) -> dict:
    """Calibration per protected group, every model at the candidate's approval rate, and the
    declared proxies' association with the score and with their protected attribute."""
    y = frame["target"].to_numpy()
    prob = probs["candidate"]
    return {
        "group_calibration": {
            a: group_calibration(y, prob, frame[a].to_numpy(), spec.gates.min_group_size)
            for a in spec.protected_attributes
        },
        "same_approval_rate": at_same_approval_rate(y, probs, candidate["approval_rate"]),
        "proxies": proxy_report(frame, prob, list(spec.proxies)),
    }


def validator_sections(figures: dict) -> list[str]:
    """The card's sections of `validator_figures` (none when not computed)."""
    lines = []
    if figures.get("group_calibration"):
        lines += [
            "",
            "## Calibration by protected group",
            "| attribute | group | n | mean predicted PD | observed default rate | gap | ECE |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, rows in figures["group_calibration"].items():
            for row in rows:
                ece = "n/a (small group)" if row["ece"] is None else f"{row['ece']:.4f}"
                lines.append(
                    f"| {name} | {row['group']} | {row['n']} | {row['mean_predicted']:.4f} | "
                    f"{row['observed_rate']:.4f} | {row['gap']:+.4f} | {ece} |"
                )
    if figures.get("same_approval_rate"):
        lines += [
            "",
            "## Compared at the same approval rate",
            "Each model with its own cutoff approving the candidate's share of the out-of-time "
            "split (ranking compared at equal volume, not at the candidate's cutoff):",
            "",
            "| model | cutoff | approval rate | bad rate among approved | goods declined |",
            "|---|---|---|---|---|",
        ]
        for name, row in figures["same_approval_rate"].items():
            lines.append(
                f"| {name} | {row['cutoff']:.4f} | {row['approval_rate']:.4f} | "
                f"{row['bad_rate_among_approved']:.4f} | {row['declined_good_rate']:.4f} |"
            )
    lines += ["", "## Proxies of protected attributes"]
    proxies = figures.get("proxies") or []
    if not proxies:
        return [*lines, "None declared in the spec (`proxies`)."]
    lines += [
        "| column | may stand for | with the score | with the attribute | why declared |",
        "|---|---|---|---|---|",
    ]
    for row in proxies:
        if "error" in row:
            lines.append(f"| {row['column']} | {row['attribute']} | {row['error']} | | |")
            continue
        lines.append(
            f"| {row['column']} | {row['attribute']} | {row['score_association']:+.3f} "
            f"({row['score_measure']}) | {row['attribute_association']:.3f} "
            f"({row['attribute_measure']}) | {row['reason']} |"
        )
    return lines


def uncertainty_section(spec: PipelineSpec, intervals: dict[str, Interval]) -> list[str]:
    """The card's table of bootstrap intervals (or why there is none)."""
    lines = ["## Uncertainty (bootstrap on the out-of-time split)"]
    if not intervals:
        return [*lines, "No intervals: `gates.bootstrap_resamples` is 0."]
    first = next(iter(intervals.values()))
    lines += [
        f"{first.level:.0%} percentile intervals over {spec.gates.bootstrap_resamples} resamples "
        f"(seed {spec.model.seed}); a gate judged on its conservative bound compares the lower "
        "bound (higher-is-better) or the upper bound (lower-is-better) with its threshold. "
        "A resample's ECE carries extra binning noise, so the ECE interval tends to sit above "
        "the full-sample figure (its upper bound errs on the side of caution).",
        "",
        "| metric | estimate | low | high |",
        "|---|---|---|---|",
    ]
    for name, interval in intervals.items():
        lines.append(
            f"| {name} | {interval.estimate:.4f} | {interval.low:.4f} | {interval.high:.4f} |"
        )
    return lines


def _cell(values: dict | None, metric: str) -> str:
    if not values or values.get(metric) is None:
        return "—"
    return f"{values[metric]:.4f}"


def gates_as_dicts(gates: list[GateResult]) -> list[dict]:
    return [asdict(g) for g in gates]
