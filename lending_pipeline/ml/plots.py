"""Evaluation plots as PNG files: ROC, calibration (reliability), PD distribution by outcome,
approval rate by protected group. Plain matplotlib (Agg), no global state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

GOOD, BAD = "#2b8a3e", "#c92a2a"


def _figure(width: float = 6, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


def plot_roc(y: np.ndarray, prob: np.ndarray, auc: float, path: Path, baseline=None) -> Path:
    """ROC curve of the candidate (and the baseline's, given as (prob, auc))."""
    figure, axes = _figure()
    fpr, tpr, _ = roc_curve(y, prob)
    axes.plot(fpr, tpr, label=f"candidate (AUC {auc:.3f})")
    if baseline is not None:
        fpr, tpr, _ = roc_curve(y, baseline[0])
        axes.plot(fpr, tpr, linestyle="--", label=f"baseline (AUC {baseline[1]:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    axes.set(xlabel="false positive rate (goods declined)", ylabel="true positive rate")
    axes.set_title("ROC, out-of-time test split")
    axes.legend(loc="lower right")
    return _save(figure, path)


def reliability(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted PD and observed default rate per quantile bin of the prediction."""
    order = np.argsort(prob, kind="stable")
    chunks = [c for c in np.array_split(order, min(bins, len(order))) if len(c)]
    predicted = np.array([prob[c].mean() for c in chunks])
    observed = np.array([y[c].mean() for c in chunks])
    return predicted, observed


def plot_calibration(y: np.ndarray, prob: np.ndarray, ece: float, path: Path) -> Path:
    """Reliability diagram: observed default rate against predicted PD, per decile."""
    predicted, observed = reliability(y, prob)
    figure, axes = _figure()
    top = float(max(predicted.max(), observed.max()) * 1.1) or 1.0
    axes.plot([0, top], [0, top], color="grey", linewidth=0.8, label="perfect calibration")
    axes.plot(predicted, observed, marker="o", label=f"candidate (ECE {ece:.4f})")
    axes.set(xlabel="mean predicted PD (decile)", ylabel="observed default rate")
    axes.set_title("Calibration, out-of-time test split")
    axes.legend(loc="upper left")
    return _save(figure, path)


def plot_pd_by_outcome(y: np.ndarray, prob: np.ndarray, cutoff: float, path: Path) -> Path:
    """Histograms of predicted PD for goods and bads, with the decision cutoff."""
    figure, axes = _figure()
    edges = np.linspace(0, float(np.quantile(prob, 0.995)) or 1.0, 40)
    axes.hist(prob[y == 0], bins=edges, density=True, alpha=0.6, color=GOOD, label="repaid")
    axes.hist(prob[y == 1], bins=edges, density=True, alpha=0.6, color=BAD, label="defaulted")
    axes.axvline(cutoff, color="black", linestyle="--", label=f"cutoff {cutoff:.3f}")
    axes.set(xlabel="predicted PD", ylabel="density")
    axes.set_title("PD distribution by outcome")
    axes.legend(loc="upper right")
    return _save(figure, path)


def plot_approval_by_group(rates: dict[str, dict[str, float]], path: Path) -> Path:
    """Approval rate per group of each protected attribute ({attribute: {group: rate}})."""
    labels, values, colors, limits = [], [], [], []
    palette = ["#1c7ed6", "#f08c00", "#7048e8", "#0ca678"]
    for i, (attribute, groups) in enumerate(rates.items()):
        first = len(labels)
        for group, rate in sorted(groups.items()):
            labels.append(f"{attribute}={group}")
            values.append(rate)
            colors.append(palette[i % len(palette)])
        if groups:
            limits.append((0.8 * max(groups.values()), first - 0.45, len(labels) - 0.55))
    figure, axes = _figure(6, 0.35 * max(len(labels), 1) + 1.8)
    if labels:
        axes.barh(range(len(labels)), values, color=colors, tick_label=labels)
        for i, (x, low, high) in enumerate(limits):
            label = "four-fifths of the group's best" if i == 0 else None
            axes.vlines(x, low, high, color=BAD, linestyle="--", label=label)
        axes.legend(loc="lower right")
    else:
        axes.text(0.5, 0.5, "no protected attributes", ha="center", va="center")
    axes.set(xlabel="approval rate at the cutoff", xlim=(0, 1))
    axes.set_title("Approval rate by protected group")
    return _save(figure, path)


def approval_rates(report: dict) -> dict[str, dict[str, float]]:
    """Approval rate per group of each protected attribute, from a metrics report."""
    return {
        attribute: dict(values["adverse_impact"]["rates"])
        for attribute, values in report.get("fairness", {}).items()
    }


def evaluation_plots(y, prob, report: dict, folder: Path) -> dict[str, Path]:
    """The four evaluation plots of one scored split, written to `folder`, by title."""
    y, prob = np.asarray(y, dtype=int), np.asarray(prob, dtype=float)
    folder = Path(folder)
    return {
        "ROC": plot_roc(y, prob, report["roc_auc"], folder / "roc.png"),
        "Calibration": plot_calibration(y, prob, report["ece"], folder / "calibration.png"),
        "PD by outcome": plot_pd_by_outcome(
            y, prob, report["cutoff"], folder / "pd_by_outcome.png"
        ),
        "Approval rate by group": plot_approval_by_group(
            approval_rates(report), folder / "approval_by_group.png"
        ),
    }
