"""Duplicate removal before any split is drawn, so no text can sit in train and test at once.

``normalise`` maps a text to the key duplicates share: lower case, a leading ``RT @user:``
retweet prefix removed, URLs and @mentions removed, whitespace collapsed. ``dedupe`` groups rows
by that key, drops every group whose rows disagree on the label (the corpus cannot say which
label is right) and keeps one row of every other group: the first in file order, so the result
is deterministic. A source dedups its whole table once, before it is cut into experiences.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

_RT = re.compile(r"^rt\s+@\w+:?\s*")  # applied after lower-casing and collapsing whitespace
_URL_OR_MENTION = re.compile(r"(?:https?://|www\.)\S+|@\w+")


def normalise(text: str) -> str:
    """The duplicate key of one text."""
    t = " ".join(str(text).lower().split())
    if t.startswith("rt"):
        t = _RT.sub("", t, count=1)
    return " ".join(_URL_OR_MENTION.sub(" ", t).split())


@dataclass(frozen=True)
class DedupCounts:
    """What ``dedupe`` found: ``kept = rows - normalised_duplicates - conflicting_groups``."""

    rows: int                   # rows looked at
    exact_duplicates: int       # rows whose exact text occurred on an earlier row
    normalised_duplicates: int  # rows whose normalised text occurred on an earlier row (includes the exact ones)
    conflicting_groups: int     # normalised texts whose rows carry different labels: all their rows dropped
    conflicting_rows: int       # rows in those groups
    kept: int                   # rows left: one per normalised text whose rows agree on the label

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def dedupe(texts: Sequence[str], labels: Sequence) -> tuple[np.ndarray, DedupCounts]:
    """Positions of the rows to keep (ascending) and the counts; ``labels`` may be any hashable values."""
    first: dict[str, int] = {}           # normalised text -> position of its first row
    label_of: dict[str, object] = {}     # normalised text -> label of its first row
    size: dict[str, int] = {}
    conflicting: set[str] = set()
    for i, (text, label) in enumerate(zip(texts, labels)):
        key = normalise(text)
        if key not in first:
            first[key], label_of[key], size[key] = i, label, 1
            continue
        size[key] += 1
        if label != label_of[key]:
            conflicting.add(key)
    keep = np.array(sorted(i for key, i in first.items() if key not in conflicting), dtype=np.int64)
    n = len(texts)
    counts = DedupCounts(rows=n, exact_duplicates=n - len(set(map(str, texts))),
                         normalised_duplicates=n - len(first), conflicting_groups=len(conflicting),
                         conflicting_rows=sum(size[k] for k in conflicting), kept=len(keep))
    return keep, counts


def report(where: str, counts: DedupCounts) -> None:
    """The one logging line a source writes about its duplicates."""
    log.info("%s: %d rows, %d exact duplicates, %d duplicates after normalising; dropped %d conflicting-label "
             "texts (%d rows); kept %d", where, counts.rows, counts.exact_duplicates, counts.normalised_duplicates,
             counts.conflicting_groups, counts.conflicting_rows, counts.kept)
