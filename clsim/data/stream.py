"""Experiences and their train/test splits — the one place every data source ends up.

A source (tweets, synthetic, files) turns its config into a list of ``Pool``s: the rows an
experience may draw from, plus the scenario field that produced it (for error messages).
``build_stream`` then draws ``train_per_experience`` + ``test_per_experience`` disjoint rows from
each pool, stratified by label where the data allow, seeded by ``(seed, experience index)`` so
the same seed gives the same stream and each experience gets its own draw.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from clsim.config import ConfigError, FileStream, SyntheticStream, TweetsStream
from clsim.data import files, synthetic, tweets
from clsim.data.pool import Experience, Pool, Split, Stream, derive_seed


def split_pool(pool: Pool, n_train: int, n_test: int, seed: int, index: int,
               file: str | Path | None = None) -> Experience:
    """Draw disjoint train/test rows from ``pool``; stratified by label unless a class is too small."""
    need = n_train + n_test
    if len(pool.labels) < need:
        raise ConfigError(file, pool.field, f"experience {pool.name!r} has {len(pool.labels)} rows; "
                                            f"needs train_per_experience + test_per_experience = {need}")
    rows = np.arange(len(pool.labels))
    state = derive_seed(seed, index, 0)
    try:
        train, test = train_test_split(rows, train_size=n_train, test_size=n_test,
                                       stratify=pool.labels, random_state=state)
    except ValueError:  # a class with < 2 rows, or fewer rows per split than classes
        train, test = train_test_split(rows, train_size=n_train, test_size=n_test, random_state=state)

    def take(idx: np.ndarray) -> Split:
        return Split([pool.texts[i] for i in idx], pool.labels[idx].astype(np.int64))

    return Experience(pool.name, take(train), take(test))


def check_test_labels(experiences: list[Experience], pools: list[Pool], label_names: list[str],
                      file: str | Path | None = None) -> None:
    """A test label no training split ever shows could never be predicted: refuse the stream."""
    seen = set()
    for exp in experiences:
        seen.update(exp.train.labels.tolist())
    for exp, pool in zip(experiences, pools):
        unseen = sorted(set(exp.test.labels.tolist()) - seen)
        if unseen:
            names = [label_names[k] for k in unseen]
            raise ConfigError(file, pool.field, f"the test split of {exp.name!r} has label(s) {names} that no "
                                                "training split contains; add training rows for them or remove them")


def _unique_names(pools: list[Pool]) -> list[Pool]:
    """A name that repeats (a revisited topic) gets ``_2``, ``_3``...: names key results and plots."""
    seen: dict[str, int] = {}
    out = []
    for p in pools:
        seen[p.name] = seen.get(p.name, 0) + 1
        out.append(p if seen[p.name] == 1 else replace(p, name=f"{p.name}_{seen[p.name]}"))
    return out


def build_stream(cfg: TweetsStream | SyntheticStream | FileStream, seed: int,
                 file: str | Path | None = None) -> Stream:
    """The stream a scenario describes. ``file`` only names the scenario file in errors."""
    if isinstance(cfg, TweetsStream):
        pools, label_names = tweets.pools(cfg, file)
    elif isinstance(cfg, SyntheticStream):
        pools, label_names = synthetic.pools(cfg, seed, file)
    elif isinstance(cfg, FileStream):
        pools, label_names = files.pools(cfg, file)
    else:
        raise TypeError(f"unknown stream config {type(cfg).__name__}")
    experiences = [split_pool(p, cfg.train_per_experience, cfg.test_per_experience, seed, i, file)
                   for i, p in enumerate(_unique_names(pools))]
    check_test_labels(experiences, pools, label_names, file)
    return Stream(experiences, list(label_names))
