"""Continual-learning metrics as pure functions of the accuracy matrix R.

R is T x T: row i is evaluated after training experience i, column j is the test
set of experience j. z is the zero-shot row (length T), evaluated before any
training. Inputs may be nested lists or arrays; results are Python floats.

Metrics that compare against an earlier or later experience (bwt, fwt,
forgetting) are undefined when T == 1 and return ``float('nan')`` rather than
a misleading 0.0; sinks write NaN as JSON null and skip it in TensorBoard.
"""
from __future__ import annotations

import math

import numpy as np

NAMES = ("acc", "bwt", "fwt", "forgetting", "learning_acc")

__all__ = ["NAMES", "acc", "learning_acc", "bwt", "fwt", "forgetting", "running", "summarize"]


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


def summarize(R, z) -> dict[str, float]:
    """All summary metrics of the full matrix: acc, bwt, fwt, forgetting, learning_acc."""
    a = _matrix(R)
    v = _zero_shot(z, a.shape[0])
    return {
        "acc": acc(a),
        "bwt": bwt(a),
        "fwt": fwt(a, v),
        "forgetting": forgetting(a),
        "learning_acc": learning_acc(a),
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

