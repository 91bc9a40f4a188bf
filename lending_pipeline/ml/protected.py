"""Protected attributes as the groups fairness is measured on: banded when the spec declares
bands for a numeric attribute (`protected_bands`), the column's values otherwise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lending_pipeline.spec import PipelineSpec


def band_labels(edges: list[float]) -> list[str]:
    """Labels of the bands cut by ascending `edges`: below the first, each [lo, hi), the rest."""
    labels = [f"< {edges[0]:g}"]
    labels += [f"{lo:g} to < {hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [*labels, f">= {edges[-1]:g}"]


def band(values, edges: list[float]) -> np.ndarray:
    """Each value's band label (None where the value is missing)."""
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    labels = np.array(band_labels(edges), dtype=object)
    out = labels[np.searchsorted(np.asarray(edges, dtype=float), numbers, side="right")]
    out[np.isnan(numbers)] = None
    return out


def protected_groups(spec: PipelineSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per protected attribute, each row's group (banded where the spec says so)."""
    groups = {}
    for attribute in spec.protected_attributes:
        edges = spec.protected_bands.get(attribute)
        values = frame[attribute]
        groups[attribute] = band(values, edges) if edges else values.astype(object).to_numpy()
    return groups
