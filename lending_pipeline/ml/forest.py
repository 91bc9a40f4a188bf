"""The boosted trees of a fitted HistGradientBoostingClassifier, evaluated by compiled loops.

scikit-learn evaluates one tree per call (about 30 microseconds a call however few the rows, so
a few hundred trees cost ~10 ms per request) and has no shortcut for reason codes, which ask
how the score moves when one input at a time is set to a reference value. Here the trees are
flattened into node arrays once and walked by Numba-compiled loops that release the GIL:

- `decision_function`: the raw log-odds, every tree summed in scikit-learn's order;
- `deltas`: the raw log-odds and, per input, its change when the input is set to its reference.
  Only a split on the input along the row's own path can change the leaf; the walk leaves that
  path at the first such split whose direction the reference value flips (exactly 0 when none
  flips, or when the value already is the reference).

The routing is scikit-learn's (`_predictor.pyx`): NaN follows `missing_go_to_left`; a
categorical value goes left when it is in the node's bitset, right when it is a known category,
else it is treated as missing; a numeric value goes left when <= the threshold. Large batches are
split across threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

MISSING_CODE = 256  # column of the category table holding the missing direction
ROWS_PER_THREAD = 1_000
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Forest:
    """The trees of a fitted binary HistGradientBoostingClassifier as flat node arrays."""

    def __init__(self, model):
        trees = [predictor for iteration in model._predictors for predictor in iteration]
        sizes = [len(tree.nodes) for tree in trees]
        nodes = np.concatenate([tree.nodes for tree in trees])
        start = np.repeat(np.cumsum([0, *sizes[:-1]]), sizes)  # each node's tree offset
        self.roots = np.cumsum([0, *sizes[:-1]]).astype(np.intp)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(np.float64)
        self.missing_left = nodes["missing_go_to_left"].astype(np.bool_)
        self.leaf = nodes["is_leaf"].astype(np.bool_)
        self.left = (nodes["left"] + start).astype(np.intp)
        self.right = (nodes["right"] + start).astype(np.intp)
        self.value = nodes["value"].astype(np.float64)
        self.depth = int(nodes["depth"].max())
        self.baseline = float(np.asarray(model._baseline_prediction).ravel()[0])
        self.category_row, self.category_left = _category_table(model, trees, nodes)
        self.inputs = int(model.n_features_in_)
        # compiled (or loaded from the cache) now, not on the first request
        self.decision_function(np.zeros((1, self.inputs)))
        self.deltas(np.zeros((1, self.inputs)), np.zeros(self.inputs))

    def _tables(self) -> tuple:
        return (
            self.roots,
            self.feature,
            self.threshold,
            self.missing_left,
            self.leaf,
            self.left,
            self.right,
            self.value,
            self.category_row,
            self.category_left,
        )

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Raw log-odds per row (as `model.decision_function`)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        parts = _in_chunks(len(x), lambda rows: _raw(x[rows], self.baseline, *self._tables()))
        return np.concatenate(parts)

    def deltas(self, x: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw log-odds per row, and its change when each input in turn is set to `reference`
        (rows x inputs; exactly 0 where the value already is the reference)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        reference = np.ascontiguousarray(reference, dtype=np.float64)

        def run(rows: slice):
            return _deltas(x[rows], reference, self.baseline, self.depth, *self._tables())

        parts = _in_chunks(len(x), run)
        return np.concatenate([raw for raw, _ in parts]), np.concatenate([c for _, c in parts])


def _category_table(model, trees, nodes) -> tuple[np.ndarray, np.ndarray]:
    """Per node its row in the category table (0 for numeric nodes) and the table: row 1.. per
    categorical node, whether code 0..255 goes left, and in column 256 the missing direction
    (for NaN and negative codes)."""
    categorical = np.flatnonzero(nodes["is_categorical"])
    row = np.zeros(len(nodes), dtype=np.intp)
    row[categorical] = np.arange(1, len(categorical) + 1)
    table = np.zeros((len(categorical) + 1, MISSING_CODE + 1), dtype=np.bool_)
    if len(categorical) == 0:
        return row, table
    bitsets = np.concatenate([t.raw_left_cat_bitsets for t in trees if len(t.raw_left_cat_bitsets)])
    offsets = np.cumsum([0] + [len(t.raw_left_cat_bitsets) for t in trees[:-1]])
    sizes = [len(t.nodes) for t in trees]
    bitset = (nodes["bitset_idx"] + np.repeat(offsets, sizes))[categorical]
    known_bitsets, known_row = model._bin_mapper.make_known_categories_bitsets()
    code = np.arange(MISSING_CODE)
    word, bit = code >> 5, (code & 31).astype(np.uint32)
    in_left = (bitsets[bitset][:, word] >> bit) & 1
    feature = nodes["feature_idx"][categorical]
    known = (known_bitsets[known_row[feature]][:, word] >> bit) & 1
    missing = nodes["missing_go_to_left"][categorical].astype(np.bool_)[:, None]
    table[1:, :MISSING_CODE] = np.where(in_left == 1, True, np.where(known == 1, False, missing))
    table[1:, MISSING_CODE] = missing[:, 0]
    return row, table


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _in_chunks(rows: int, work) -> list:
    """`work(slice)` over consecutive row ranges, on several threads when there are many rows
    (the compiled loops release the GIL); the results in row order."""
    global _POOL
    threads = min(THREADS, rows // ROWS_PER_THREAD)
    if threads < 2:
        return [work(slice(0, rows))]
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="forest")
    bounds = np.linspace(0, rows, threads + 1).astype(int)
    return list(
        _POOL.map(work, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    )


# The compiled helpers take scalars only: a helper given arrays pays their reference counting on
# every call (measured: ten times slower than the same code written in the loop).


@numba.njit(cache=True, nogil=True)
def _code(value):
    """The category table column of a value: its code, or the missing column."""
    if value != value or value < 0:
        return MISSING_CODE
    return 255 if value > 255 else np.intp(value)


@numba.njit(cache=True, nogil=True)
def _goes_left(value, threshold, missing_left, categorical, category_goes_left):
    if categorical:
        return category_goes_left
    if value != value:
        return missing_left
    return value <= threshold


@numba.njit(cache=True, nogil=True)
def _seen(f, feature, path, k):
    """Whether input `f` is split on among the first `k` nodes of the path."""
    for m in range(k):  # noqa: SIM110 (a loop compiles; a generator does not)
        if feature[path[m]] == f:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _raw(
    x, baseline, roots, feature, threshold, missing_left, leaf, left, right, value, cat, table
):
    out = np.full(x.shape[0], baseline)
    for root in roots:  # tree by tree (its nodes stay in cache), summed in scikit-learn's order
        for i in range(x.shape[0]):
            node = root
            while not leaf[node]:
                v, row = x[i, feature[node]], cat[node]
                go = _goes_left(v, threshold[node], missing_left[node], row, table[row, _code(v)])
                node = left[node] if go else right[node]
            out[i] += value[node]
    return out


@numba.njit(cache=True, nogil=True)
def _deltas(
    x,
    reference,
    baseline,
    depth,
    roots,
    feature,
    threshold,
    missing_left,
    leaf,
    left,
    right,
    value,
    cat,
    table,
):
    raw = np.full(x.shape[0], baseline)
    change = np.zeros(x.shape)
    path = np.empty(depth + 1, dtype=np.intp)
    for root in roots:
        for i in range(x.shape[0]):
            node, steps = root, 0
            while not leaf[node]:
                path[steps] = node
                steps += 1
                v, row = x[i, feature[node]], cat[node]
                go = _goes_left(v, threshold[node], missing_left[node], row, table[row, _code(v)])
                node = left[node] if go else right[node]
            path[steps] = node
            reached = value[node]
            raw[i] += reached
            for k in range(steps):
                f = feature[path[k]]
                actual, wanted = x[i, f], reference[f]
                if actual == wanted or (actual != actual and wanted != wanted):
                    continue
                if _seen(f, feature, path, k):
                    continue  # looked at from its first split on the path
                for m in range(k, steps):
                    if feature[path[m]] != f:
                        continue
                    node = path[m]  # the walk with the reference value, from this split on
                    while not leaf[node]:
                        v = wanted if feature[node] == f else x[i, feature[node]]
                        row = cat[node]
                        go = _goes_left(
                            v, threshold[node], missing_left[node], row, table[row, _code(v)]
                        )
                        node = left[node] if go else right[node]
                        if node == path[m + 1]:
                            break  # same turn as the row's own: try the next split on f
                    if node != path[m + 1]:
                        change[i, f] += value[node] - reached
                        break
    return raw, change
