"""Disjoint train / validation / test draws from one pool, stratified by label — plain numpy.

``draw(labels, sizes, seed)`` takes ``sizes[s]`` rows for every split ``s`` (any number of
splits; clsim uses train, val, test). Stratified: every split has exactly its size and holds
every class within one row of its exact share of the pool (``class_split_counts``: the ideal
counts rounded, largest remainders first, so that sizes and class totals stay exact). Every
class's rows are shuffled by one ``numpy.random.Generator`` (classes in ascending order), then
each split's rows, so a seed fixes the whole draw and classes are mixed within a split.

When a class is too small to reach every non-empty split, or a split is smaller than the
number of classes, stratification is not possible and the draw is a plain random one (as
scikit-learn's ``train_test_split`` would refuse to stratify).

scikit-learn is not used: importing it costs seconds, and ``clsim validate`` draws the splits.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def stratifiable(labels: np.ndarray, sizes: Sequence[int]) -> bool:
    """Every class can put a row in every non-empty split, and every such split can hold every class."""
    _, per_class = np.unique(labels, return_counts=True)
    used = [s for s in sizes if s > 0]
    return bool(len(per_class)) and int(per_class.min()) >= len(used) and all(s >= len(per_class) for s in used)


def class_split_counts(per_class: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Rows per (split, class): split ``s`` would ideally take ``sizes[s] * m_c / M`` of class ``c``
    (``m_c`` of the pool's ``M`` rows). With the rows left undrawn as one more split, that ideal
    table has integer row sums (the sizes) and column sums (the classes); every cell is rounded
    down or up so that both sums stay exact. Round-ups go to the largest remainders first; an
    augmenting path settles what that greedy order leaves (such a rounding always exists)."""
    per_class = np.asarray(per_class, dtype=np.int64)
    total = int(per_class.sum())
    full = np.append(np.asarray(sizes, dtype=np.int64), total - int(np.sum(sizes)))  # last: not drawn
    table, remainder = np.divmod(np.outer(full, per_class), max(total, 1))  # exact integers: no float floors
    need_row, need_col = full - table.sum(axis=1), per_class - table.sum(axis=0)
    up = np.zeros(table.shape, dtype=bool)
    for s, c in sorted(zip(*np.nonzero(remainder)), key=lambda sc: (-remainder[sc], sc)):
        if need_row[s] and need_col[c]:
            up[s, c], need_row[s], need_col[c] = True, need_row[s] - 1, need_col[c] - 1
    while need_row.any():
        _augment(up, remainder > 0, need_row, need_col)
    return (table + up)[:-1]


def _augment(up: np.ndarray, allowed: np.ndarray, need_row: np.ndarray, need_col: np.ndarray) -> None:
    """One more round-up: a path row -> column (add) -> row (remove) -> ... ending at a column in need."""
    start = int(np.flatnonzero(need_row)[0])
    came_from: dict[tuple[str, int], tuple[str, int] | None] = {("r", start): None}
    frontier = [("r", start)]
    while frontier:
        kind, k = frontier.pop(0)
        if kind == "c" and need_col[k]:
            node = (kind, k)
            while came_from[node] is not None:  # flip the path: adds become removes and back
                prev = came_from[node]
                r, c = (prev[1], node[1]) if prev[0] == "r" else (node[1], prev[1])
                up[r, c] = not up[r, c]
                node = prev
            need_row[start] -= 1
            need_col[k] -= 1
            return
        nexts = ([("c", c) for c in np.flatnonzero(allowed[k] & ~up[k])] if kind == "r"
                 else [("r", r) for r in np.flatnonzero(up[:, k])])
        for node in nexts:
            node = (node[0], int(node[1]))
            if node not in came_from:
                came_from[node] = (kind, k)
                frontier.append(node)
    raise AssertionError("no rounding with these sums")  # cannot happen: the ideal table has them


def draw(labels: np.ndarray, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Disjoint positions into ``labels`` for each split (``len == sizes[s]``, in random order)."""
    labels = np.asarray(labels)
    need = int(sum(sizes))
    if need > len(labels):
        raise ValueError(f"cannot draw {need} rows from {len(labels)}")
    rng = np.random.default_rng(seed)
    bounds = np.cumsum([0, *sizes])
    if not stratifiable(labels, sizes):
        chosen = rng.permutation(len(labels))[:need]
        return [chosen[bounds[s]:bounds[s + 1]].astype(np.int64) for s in range(len(sizes))]
    classes, per_class = np.unique(labels, return_counts=True)
    table = class_split_counts(per_class, sizes)
    parts: list[list[np.ndarray]] = [[] for _ in sizes]
    for c, cls in enumerate(classes):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for s in range(len(sizes)):
            parts[s].append(rows[start:start + table[s, c]])
            start += table[s, c]
    return [rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts]
