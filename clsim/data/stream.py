"""Experiences and their train / validation / test splits — the one place every data source ends up.

A source (tweets, synthetic, files) turns its config into a ``Source``: the rows each experience
may draw from (already deduplicated), plus the scenario field that produced each pool (for error
messages). ``build_stream`` then draws ``train_per_experience`` (a tweets stream's
``train_per_topic`` overrides it per topic) + ``val_per_experience`` +
``test_per_experience`` disjoint rows from each pool, stratified by label where the data allow
(``clsim.data.split``), seeded by ``(seed, experience index)`` so the same seed gives the same
stream and each experience gets its own draw.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from clsim.config import ConfigError, FileStream, SyntheticStream, TweetsStream
from clsim.data import synthetic
from clsim.data.pool import Experience, Pool, Source, Split, Stream, derive_seed
from clsim.data.split import draw

SPLIT_PURPOSE = 0  # derive_seed purpose of an experience's split draw
METHOD = ("per class, rows shuffled by numpy.random.default_rng(derive_seed(seed, experience index, 0)); "
          "counts by largest remainder (clsim.data.split); unstratified when a class is too small")


def split_pool(pool: Pool, n_train: int, n_test: int, seed: int, index: int,
               file: str | Path | None = None, *, n_val: int = 0, in_order: bool = False) -> Experience:
    """Draw disjoint train / val / test rows from ``pool``; stratified by label unless a class is too small.
    ``in_order``: the training rows keep the pool's order (a time window's rows sorted by time: the
    online protocol streams them as they happened)."""
    need = n_train + n_val + n_test
    if len(pool.labels) < need:
        fields = "train_per_experience + " + ("val_per_experience + " if n_val else "") + "test_per_experience"
        raise ConfigError(file, pool.field, f"experience {pool.name!r} has {len(pool.labels)} rows; "
                                            f"needs {fields} = {need}")
    train, val, test = draw(pool.labels, (n_train, n_val, n_test), derive_seed(seed, index, SPLIT_PURPOSE))
    if in_order:
        train = np.sort(train)

    def take(idx: np.ndarray) -> Split:
        return Split([pool.texts[i] for i in idx], pool.labels[idx].astype(np.int64), pool.rows[idx].astype(np.int64))

    return Experience(pool.name, take(train), take(test), take(val))


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


def read_source(cfg: TweetsStream | SyntheticStream | FileStream, seed: int,
                file: str | Path | None = None) -> Source:
    """What the scenario's source holds: deduplicated pools, one per experience."""
    if isinstance(cfg, TweetsStream):
        from clsim.data import tweets  # here: pandas costs ~0.4 s of `clsim validate` on a synthetic stream

        return tweets.source(cfg, file)
    if isinstance(cfg, SyntheticStream):
        return synthetic.source(cfg, seed, file)
    if isinstance(cfg, FileStream):
        from clsim.data import files  # here: pandas, as above

        return files.source(cfg, file)
    raise TypeError(f"unknown stream config {type(cfg).__name__}")


def build_stream(cfg: TweetsStream | SyntheticStream | FileStream, seed: int,
                 file: str | Path | None = None) -> Stream:
    """The stream a scenario describes. ``file`` only names the scenario file in errors."""
    src = read_source(cfg, seed, file)
    sizes = cfg.train_per_experience, cfg.val_per_experience, cfg.test_per_experience
    in_order = cfg.protocol == "online" and getattr(cfg, "time_column", None) is not None  # arrivals in time order
    experiences = [split_pool(p, cfg.train_size(i), sizes[2], seed, i, file, n_val=sizes[1], in_order=in_order)
                   for i, p in enumerate(_unique_names(src.pools))]
    check_test_labels(experiences, src.pools, src.label_names, file)
    drawn = {"seed": seed, "train_per_experience": sizes[0], "val_per_experience": sizes[1],
             "test_per_experience": sizes[2], "method": METHOD + ("; training rows in time order" if in_order else "")}
    if getattr(cfg, "train_per_topic", None):
        drawn["train_per_topic"] = dict(cfg.train_per_topic)
    return Stream(experiences, list(src.label_names), dict(src.description), src.dedup, drawn)
