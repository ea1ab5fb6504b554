"""Continual-learning metrics as pure functions of what a run records.

A run records confusion matrices (``clsim.evaluation``); from each, :func:`accuracy`,
:func:`balanced_accuracy` (mean recall over the labels the test set holds — robust to
label-prior drift, where always predicting the majority class scores well on accuracy) and
:func:`majority_rate` (the accuracy of always predicting that test set's most common label).

R is T x T: row i is evaluated after training experience i, column j is the test set of
experience j (accuracy, or balanced accuracy: every metric below applies to either). z is the
zero-shot row (length T), evaluated before any training. Inputs may be nested lists or arrays;
results are Python floats. :func:`interval` and :func:`paired_interval` summarise a metric over
seeds.

Metrics that compare against an earlier or later experience (bwt, fwt,
forgetting) are undefined when T == 1 and return ``float('nan')`` rather than
a misleading 0.0; sinks write NaN as JSON null and skip it in TensorBoard.
"""
from __future__ import annotations

import math

import numpy as np

NAMES = ("acc", "bwt", "fwt", "forgetting", "learning_acc", "serving_acc")

__all__ = ["NAMES", "accuracy", "balanced_accuracy", "majority_rate", "acc", "learning_acc", "bwt", "fwt",
           "forgetting", "serving_acc", "running", "summarize", "interval", "paired_interval"]


# --------------------------------------------------------------------------- one test set
def _confusion(C) -> np.ndarray:
    c = np.asarray(C, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"a confusion matrix must be K x K, got shape {c.shape}")
    return c


def accuracy(C) -> float:
    """Share of texts predicted right: trace / total (NaN for an empty test set)."""
    c = _confusion(C)
    n = c.sum()
    return float(np.trace(c) / n) if n else math.nan


def balanced_accuracy(C) -> float:
    """Mean over the labels present in the test set of their recall C[k, k] / sum_p C[k, p]."""
    c = _confusion(C)
    support = c.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(c)[present] / support[present])) if present.any() else math.nan


def majority_rate(C) -> float:
    """Accuracy of always predicting the test set's most common label: max_k support_k / total."""
    c = _confusion(C)
    n = c.sum()
    return float(c.sum(axis=1).max() / n) if n else math.nan


def _matrix(R) -> np.ndarray:
    a = np.asarray(R, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be a non-empty square T x T matrix, got shape {a.shape}")
    return a


def _zero_shot(z, T: int) -> np.ndarray:
    v = np.asarray(z, dtype=float)
    if v.shape != (T,):
        raise ValueError(f"zero-shot row must have length T={T}, got shape {v.shape}")
    return v


def acc(R) -> float:
    """Final average accuracy: ACC = 1/T * sum_j R[T-1, j]."""
    a = _matrix(R)
    return float(a[-1].mean())


def learning_acc(R) -> float:
    """Learning accuracy (plasticity): LA = 1/T * sum_i R[i, i]."""
    a = _matrix(R)
    return float(np.diag(a).mean())


def bwt(R) -> float:
    """Backward transfer (GEM, Lopez-Paz & Ranzato 2017).

    BWT = 1/(T-1) * sum_{j<T-1} (R[T-1, j] - R[j, j]); negative means forgetting.
    NaN when T == 1 (no earlier experience to look back on).
    """
    a = _matrix(R)
    T = a.shape[0]
    if T == 1:
        return math.nan
    return float((a[-1, :-1] - np.diag(a)[:-1]).mean())


def fwt(R, z) -> float:
    """Forward transfer (GEM): FWT = 1/(T-1) * sum_{j>0} (R[j-1, j] - z[j]).

    How much training up to j-1 helps on the not-yet-seen experience j, relative
    to the zero-shot model. NaN when T == 1.
    """
    a = _matrix(R)
    T = a.shape[0]
    v = _zero_shot(z, T)
    if T == 1:
        return math.nan
    return float((np.diag(a, k=1) - v[1:]).mean())


def forgetting(R) -> float:
    """Average forgetting (Chaudhry et al. 2018).

    F = 1/(T-1) * sum_{j<T-1} (max_{j<=l<T-1} R[l, j] - R[T-1, j]): the drop from the
    best accuracy ever reached on j (after learning it) to the final accuracy.
    NaN when T == 1.
    """
    a = _matrix(R)
    T = a.shape[0]
    if T == 1:
        return math.nan
    # Entries above the diagonal (l < j) are masked out of the max.
    past = np.where(np.tril(np.ones((T - 1, T - 1), dtype=bool)), a[:-1, :-1], -np.inf)
    return float((past.max(axis=0) - a[-1, :-1]).mean())


def serving_acc(R) -> float:
    """How the model in service does on data that has just arrived, before it learns from it:
    mean_{k>0} R[k-1, k]. NaN when T == 1."""
    a = _matrix(R)
    T = a.shape[0]
    if T == 1:
        return math.nan
    return float(np.diag(a, k=1).mean())


def summarize(R, z) -> dict[str, float]:
    """All summary metrics of the full matrix (:data:`NAMES`)."""
    a = _matrix(R)
    v = _zero_shot(z, a.shape[0])
    return {
        "acc": acc(a),
        "bwt": bwt(a),
        "fwt": fwt(a, v),
        "forgetting": forgetting(a),
        "learning_acc": learning_acc(a),
        "serving_acc": serving_acc(a),
    }


def running(R, z) -> dict[str, list[float]]:
    """Metrics on the leading k x k sub-matrix for k = 1..T (curves for plots).

    Entry k-1 is what summarize() would report had the stream stopped after
    experience k-1, e.g. acc_k = mean_{j<=k-1} R[k-1, j]; the last entry equals summarize(R, z).
    """
    a = _matrix(R)
    T = a.shape[0]
    v = _zero_shot(z, T)
    out: dict[str, list[float]] = {n: [] for n in NAMES}
    for k in range(1, T + 1):
        for n, x in summarize(a[:k, :k], v[:k]).items():
            out[n].append(x)
    return out


# --------------------------------------------------------------------------- over seeds
def interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval over independent runs (seeds):
    mean ± t_{(1+level)/2, n-1} · s / sqrt(n). NaN values are left out; with fewer than two
    values the interval is (NaN, NaN)."""
    v = np.asarray([x for x in np.asarray(values, dtype=float).ravel() if math.isfinite(x)])
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    from scipy import stats  # here: scipy takes a second to import, and `clsim validate` needs no interval

    half = float(stats.t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def paired_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """The mean difference a − b over the same seeds, with its t interval (paired: seed k of a
    against seed k of b, so what the seed shares — split, initialisation — cancels out)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values must match, got {a.shape} and {b.shape}")
    return interval(a - b, level)
