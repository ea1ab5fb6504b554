"""The data a stream is made of: pools of rows per experience, and the splits drawn from them.

Sources (tweets, synthetic, files) turn their config into a ``Source``: ``Pool``s, label names,
a description of where the rows come from, and what duplicate removal found.
``clsim.data.stream`` draws each experience's splits from the pools. Every pool and split
carries the corpus row ids of its rows (tweets: the CSV's 0-based data row; a file: its row in
the user's table; synthetic: the position in the generated pool), so a split can be written
down and audited (``clsim.data.record``). ``derive_seed`` gives every (seed, experience,
purpose) its own independent random stream.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: np.ndarray  # int64 class indices into Stream.label_names
    rows: np.ndarray    # int64 corpus row ids, one per text

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def empty(cls) -> "Split":
        return cls([], np.zeros(0, np.int64), np.zeros(0, np.int64))


@dataclass(frozen=True)
class Experience:
    name: str  # e.g. "airline", "food", "window_0"
    train: Split
    test: Split
    val: Split = field(default_factory=Split.empty)  # validation rows: tuning and early stopping, never test


@dataclass(frozen=True)
class Stream:
    experiences: list[Experience]
    label_names: list[str]
    source: dict[str, Any] = field(default_factory=dict)  # where rows come from (Source.description)
    dedup: dict[str, int] | None = None                   # clsim.data.clean.DedupCounts, when the source dedups
    draw: dict[str, Any] = field(default_factory=dict)    # seed and sizes the splits were drawn with


@dataclass(frozen=True)
class Pool:
    """All rows one experience may draw from; ``field`` names its scenario entry in errors."""

    name: str
    texts: list[str]
    labels: np.ndarray
    field: str
    rows: np.ndarray  # corpus row ids, one per text


@dataclass(frozen=True)
class Source:
    """What a source read: pools in stream order, label names, a JSON-able description that says
    how to find the rows again (``clsim.data.record``), and its duplicate counts (None: no dedup)."""

    pools: list[Pool]
    label_names: list[str]
    description: dict[str, Any]
    dedup: dict[str, int] | None = None


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one (scenario seed, experience index, purpose) — independent streams."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a data file (hex): a split record names the exact file its row ids index."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:  # keyed on mtime and size: a changed file is read again
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
