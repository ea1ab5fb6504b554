"""The data a stream is made of: pools of rows per experience, and the splits drawn from them.

Sources (tweets, synthetic, files) turn their config into ``Pool``s; ``clsim.data.stream`` draws
each experience's splits from them. ``derive_seed`` gives every (seed, experience, purpose) its
own independent random stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: np.ndarray  # int64 class indices into Stream.label_names

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Experience:
    name: str  # e.g. "airline", "food", "window_0"
    train: Split
    test: Split


@dataclass(frozen=True)
class Stream:
    experiences: list[Experience]
    label_names: list[str]


@dataclass(frozen=True)
class Pool:
    """All rows one experience may draw from; ``field`` names its scenario entry in errors."""

    name: str
    texts: list[str]
    labels: np.ndarray
    field: str


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one (scenario seed, experience index, purpose) — independent streams."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])
