"""A seeded generator of short sentiment texts with declared drift.

Each domain has its own nouns and its own sentiment words; a few words are *contested* — their
polarity depends on the domain ("unpredictable" praises a film and damns a laptop, "loud" is a
good crowd and a bad hotel room, "quiet" the reverse). A model trained on one domain after
another must overwrite those cues, so the stream shows forgetting by construction. A few generic
words ("great", "awful") are shared by every domain and carry over.

Drift a scenario can declare per experience:
- domain shift: ``domain`` (one of ``DOMAINS``);
- label-prior shift: ``label_prior`` over (negative, neutral, positive), normalised, default
  uniform; it is the prior of the *emitted* labels and is met exactly (largest-remainder counts);
- concept drift: ``flip: true`` keeps the texts but swaps negative <-> positive labels.

Generation is pure Python on ``random.Random``: thousands of texts take a few milliseconds.

Unlike the tweets and files, synthetic pools are not deduplicated: the generator draws short
texts from small templates, so repeats (and the same text in train and test) are part of its
design, and there is no corpus whose rows could leak. A row id is a text's position in its
experience's generated pool; ``row_reader`` generates the pool again to look rows up.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clsim.config import ConfigError, SyntheticStream
from clsim.data.pool import Pool, Source, derive_seed

LABELS = ["negative", "neutral", "positive"]
NEG, NEU, POS = 0, 1, 2


@dataclass(frozen=True)
class Domain:
    nouns: tuple[str, ...]
    positive: tuple[str, ...]  # domain-specific words first, then contested ones
    negative: tuple[str, ...]


def _d(nouns: str, positive: str, negative: str) -> Domain:
    return Domain(tuple(nouns.split()), tuple(positive.split()), tuple(negative.split()))


DOMAINS: dict[str, Domain] = {
    "food": _d("pasta soup steak burger salad curry dessert waiter bread pizza",
               "delicious tasty flavorful fresh juicy savory hot rich soft",
               "bland stale greasy soggy burnt undercooked cold raw slow crowded"),
    "tech": _d("laptop phone battery screen keyboard charger app update tablet speaker",
               "snappy responsive sleek intuitive reliable crisp quiet light predictable simple",
               "laggy buggy glitchy sluggish flimsy unresponsive hot loud unpredictable cheap heavy"),
    "travel": _d("flight hotel room train seat airport beach tour luggage guide",
                 "spacious scenic relaxing comfortable punctual welcoming quiet cheap simple",
                 "cramped delayed dirty overbooked rude shabby loud crowded tight dark unpredictable"),
    "movies": _d("plot film actor ending soundtrack script sequel villain director scene",
                 "gripping moving hilarious witty stunning captivating unpredictable dark intense raw",
                 "boring cliched dull wooden forgettable tedious predictable simple light cheap slow"),
    "sports": _d("team match coach striker defense crowd referee goal season keeper",
                 "dominant clinical thrilling fearless unstoppable disciplined tight loud crowded intense",
                 "sloppy lazy clueless toothless disjointed lifeless quiet soft slow predictable"),
}
GENERIC = {POS: ("great", "excellent", "wonderful", "fantastic"), NEG: ("awful", "terrible", "bad", "horrible")}
NEUTRAL = ("on the list", "mentioned in the notes", "the same as last time", "scheduled for friday",
           "listed online", "part of the plan", "discussed yesterday", "described in the email")
OPENERS = ("", "", "honestly ", "well ", "i think ", "today ", "overall ", "so ")
MODIFIERS = ("", "", "very ", "really ", "quite ", "pretty ")
SENTIMENT_CLAUSES = ("the {n} was {m}{a}", "i found the {n} {m}{a}", "that {n} felt {m}{a}",
                     "the {n} is {m}{a}", "what a {a} {n}")
NEUTRAL_CLAUSES = ("the {n} was {p}", "i saw the {n} {p}", "they said the {n} is {p}", "the {n} is {p}")
GENERIC_RATE = 0.2  # share of sentiment words drawn from GENERIC instead of the domain's own
FLIP = np.array([POS, NEU, NEG])


def class_counts(prior: Sequence[float] | None, n: int) -> np.ndarray:
    """Exact per-class counts for ``n`` rows: normalised prior, largest-remainder rounding."""
    p = np.full(3, 1 / 3) if prior is None else np.asarray(prior, float) / np.sum(prior)
    counts = np.floor(p * n).astype(np.int64)
    rest = np.argsort(-(p * n - counts), kind="stable")[: n - counts.sum()]
    counts[rest] += 1
    return counts


def _clause(rng: random.Random, dom: Domain, sentiment: int) -> str:
    noun = rng.choice(dom.nouns)
    if sentiment == NEU:
        return rng.choice(NEUTRAL_CLAUSES).format(n=noun, p=rng.choice(NEUTRAL))
    words = GENERIC[sentiment] if rng.random() < GENERIC_RATE else (dom.positive if sentiment == POS else dom.negative)
    return rng.choice(SENTIMENT_CLAUSES).format(n=noun, m=rng.choice(MODIFIERS), a=rng.choice(words))


def text(rng: random.Random, domain: str, sentiment: int) -> str:
    """One text of the given sentiment: an opener and one or two clauses."""
    dom = DOMAINS[domain]
    out = rng.choice(OPENERS) + _clause(rng, dom, sentiment)
    if rng.random() < 0.6:
        out += " and " + _clause(rng, dom, sentiment)
    return out


def generate(domain: str, n: int, seed: int, label_prior: Sequence[float] | None = None,
             flip: bool = False) -> tuple[list[str], np.ndarray]:
    """``n`` shuffled (text, label) rows; labels follow ``label_prior`` exactly; ``flip`` swaps neg/pos."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known domains are {sorted(DOMAINS)}")
    rng = random.Random(seed)
    labels = np.repeat(np.arange(3, dtype=np.int64), class_counts(label_prior, n))
    rng.shuffle(labels)
    sentiments = FLIP[labels] if flip else labels
    return [text(rng, domain, int(s)) for s in sentiments], labels


def pool_size(cfg: SyntheticStream) -> int:
    """Rows generated per experience: exactly what its splits take."""
    return cfg.train_per_experience + cfg.val_per_experience + cfg.test_per_experience


def source(cfg: SyntheticStream, seed: int, file: str | Path | None = None) -> Source:
    """One freshly generated pool per experience, exactly train + val + test rows, seeded by (seed, index)."""
    n = pool_size(cfg)
    out = []
    for i, exp in enumerate(cfg.experiences):
        field = f"stream.experiences[{i}]"
        if exp.domain not in DOMAINS:
            raise ConfigError(file, f"{field}.domain",
                              f"unknown domain {exp.domain!r}; known domains are {', '.join(sorted(DOMAINS))}")
        prior = exp.label_prior
        if prior is not None and (len(prior) != 3 or sum(prior) <= 0):
            raise ConfigError(file, f"{field}.label_prior", "expected 3 non-negative weights "
                                                            f"(negative, neutral, positive) with a positive sum, got {list(prior)}")
        texts, labels = generate(exp.domain, n, derive_seed(seed, i, 1), prior, exp.flip)
        name = exp.domain + ("_flipped" if exp.flip else "")
        out.append(Pool(name, texts, labels, field, np.arange(n, dtype=np.int64)))
    description = {"kind": "synthetic", "seed": seed, "pool_size": n,
                   "experiences": [e.model_dump(mode="json") for e in cfg.experiences],
                   "rows": "position in the experience's generated pool: generate(domain, pool_size, "
                           "derive_seed(seed, experience index, 1), label_prior, flip)"}
    return Source(out, list(LABELS), description)


def row_reader(description: dict):
    """``lookup(index, rows) -> (texts, label names)``: experience ``index``'s pool generated again."""
    @functools.lru_cache(maxsize=None)
    def pool(index: int) -> tuple[list[str], np.ndarray]:
        exp = description["experiences"][index]
        return generate(exp["domain"], description["pool_size"], derive_seed(description["seed"], index, 1),
                        exp.get("label_prior"), exp.get("flip", False))

    def lookup(index: int, rows: list[int]) -> tuple[list[str], list[str]]:
        texts, labels = pool(index)
        return [texts[r] for r in rows], [LABELS[labels[r]] for r in rows]

    return lookup
