"""Clean, auditable splits: duplicate removal before splitting, the numpy 3-way splitter, the
validation split, ``min_confidence``, the split record and its round trip, and what
``clsim validate`` imports."""
from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clsim.config import ConfigError, FileStream, SyntheticStream, TweetsStream
from clsim.data import build_stream, dedupe, normalise, read_record, split_record
from clsim.data.pool import Pool
from clsim.data.split import class_split_counts, draw
from clsim.data.stream import split_pool

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")


def fstream(path, train, test, val=0, **kw) -> FileStream:
    return FileStream.model_validate({"source": "file", "path": str(path), "train_per_experience": train,
                                      "val_per_experience": val, "test_per_experience": test, **kw})


def syn(experiences, train=30, val=12, test=18) -> SyntheticStream:
    return SyntheticStream.model_validate({"source": "synthetic", "experiences": experiences, "train_per_experience": train,
                                           "val_per_experience": val, "test_per_experience": test})


# --------------------------------------------------------------------------- normalise and dedupe
@pytest.mark.parametrize("text, key", [
    ("Hello World", "hello world"),
    ("  hello \t\n world ", "hello world"),
    ("RT @bob_1: hello world", "hello world"),
    ("rt  @bob hello world", "hello world"),
    ("hello world http://t.co/abc https://x.y/z?q=1 www.site.com", "hello world"),
    ("@united hello @Delta world", "hello world"),
    ("hello RT @bob: world", "hello rt : world"),  # only a leading retweet prefix is a prefix
    ("Hello, world!", "hello, world!"),            # punctuation stays: it can change the meaning
])
def test_normalise(text, key):
    assert normalise(text) == key


def test_dedupe_keeps_the_first_row_and_drops_conflicting_groups():
    texts = ["Great flight", "great flight", "RT @x: GREAT  flight http://t.co/1",  # one group, one label
             "bad bag", "Bad bag @united",                                          # conflicting labels
             "fine", "fine", "other"]
    labels = ["pos", "pos", "pos", "neg", "pos", "neu", "neu", "neu"]
    keep, counts = dedupe(texts, labels)
    assert keep.tolist() == [0, 5, 7]
    assert counts.as_dict() == {"rows": 8, "exact_duplicates": 1, "normalised_duplicates": 4,
                                "conflicting_groups": 1, "conflicting_rows": 2, "kept": 3}
    assert counts.kept == counts.rows - counts.normalised_duplicates - counts.conflicting_groups


# --------------------------------------------------------------------------- the splitter
def test_class_split_counts_round_the_ideal_table_keeping_both_sums():
    assert class_split_counts(np.array([600, 300, 100]), (200, 50, 100)).tolist() == [[120, 60, 20], [30, 15, 5],
                                                                                      [60, 30, 10]]
    # pool 5/3/2, sizes 3/2/4 (+1 left undrawn); ideal 3: 1.5 .9 .6, 2: 1 .6 .4, 4: 2 1.2 .8, left: .5 .3 .2.
    # Floors, then round-ups by largest remainder while a row and a column still need one:
    # (0,1) .9, (2,2) .8, (0,2) .6, (1,1) .6, (3,0) .5
    assert class_split_counts(np.array([5, 3, 2]), (3, 2, 4)).tolist() == [[1, 1, 1], [1, 1, 0], [2, 1, 1]]
    rng = np.random.default_rng(0)
    for _ in range(500):  # any pool, any sizes: exact sizes, within one row of the exact share, no class overdrawn
        per_class = rng.integers(1, 40, size=rng.integers(1, 6))
        cuts = np.sort(rng.integers(0, rng.integers(0, per_class.sum() + 1) + 1, size=3))
        sizes = np.diff(np.r_[0, cuts])
        table = class_split_counts(per_class, sizes)
        assert table.sum(axis=1).tolist() == sizes.tolist() and np.all(table.sum(axis=0) <= per_class)
        assert np.all(np.abs(table - np.outer(sizes, per_class) / per_class.sum()) < 1)


def test_three_splits_are_disjoint_exact_and_stratified():
    labels = np.array([0] * 637 + [1] * 212 + [2] * 151)
    for seed in range(5):
        parts = draw(labels, (300, 100, 200), seed)
        assert [len(p) for p in parts] == [300, 100, 200]
        flat = np.concatenate(parts)
        assert len(set(flat.tolist())) == 600 and flat.min() >= 0 and flat.max() < 1000
        pool_share = np.bincount(labels) / len(labels)
        for p in parts:
            counts = np.bincount(labels[p], minlength=3)
            assert np.all(np.abs(counts - pool_share * len(p)) < 1), (seed, counts)


def test_draw_is_deterministic_per_seed_and_in_random_order():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    a, b, c = draw(labels, (40, 10, 20), 7), draw(labels, (40, 10, 20), 7), draw(labels, (40, 10, 20), 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(labels[a[0]], np.sort(labels[a[0]]))  # classes are mixed, not in blocks


def test_draw_falls_back_to_a_plain_draw_when_a_class_is_too_small():
    labels = np.array([0] * 20 + [1])  # one row of class 1 cannot reach three splits
    parts = draw(labels, (10, 4, 5), 0)
    assert [len(p) for p in parts] == [10, 4, 5] and len(set(np.concatenate(parts).tolist())) == 19


def test_split_pool_keeps_row_ids_with_texts():
    pool = Pool("p", [f"text{i}" for i in range(50)], np.arange(50) % 3, "stream.experiences[0]",
                np.arange(1000, 1050))
    exp = split_pool(pool, 20, 10, seed=0, index=0, n_val=5)
    for split in (exp.train, exp.val, exp.test):
        assert [f"text{r - 1000}" for r in split.rows] == split.texts
        assert split.rows.dtype == np.int64


def test_too_many_rows_asked_for_names_file_and_field():
    pool = Pool("x", ["a"] * 20, np.zeros(20, np.int64), "stream.experiences[1]", np.arange(20))
    with pytest.raises(ConfigError, match=r"'x' has 20 rows; needs train_per_experience \+ val_per_experience "
                                          r"\+ test_per_experience = 21") as info:
        split_pool(pool, 10, 6, seed=0, index=1, file="s.yaml", n_val=5)
    assert (info.value.file, info.value.field) == ("s.yaml", "stream.experiences[1]")


# --------------------------------------------------------------------------- streams with a validation split
def test_synthetic_stream_has_a_disjoint_stratified_validation_split():
    stream = build_stream(syn(["food", {"domain": "tech", "label_prior": [0.6, 0.2, 0.2]}], 30, 12, 18), 3)
    for exp in stream.experiences:
        assert (len(exp.train), len(exp.val), len(exp.test)) == (30, 12, 18)
        rows = [set(getattr(exp, s).rows.tolist()) for s in SPLITS]
        assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    tech = stream.experiences[1]
    # pool 36/12/12; ideal train 18/6/6, val 7.2/2.4/2.4, test 10.8/3.6/3.6: test's larger remainders
    # round up first (classes 0 and 1), which leaves class 2's round-up to val
    assert np.bincount(tech.train.labels, minlength=3).tolist() == [18, 6, 6]
    assert np.bincount(tech.val.labels, minlength=3).tolist() == [7, 2, 3]
    assert np.bincount(tech.test.labels, minlength=3).tolist() == [11, 4, 3]


def test_no_validation_split_by_default():
    cfg = SyntheticStream.model_validate({"source": "synthetic", "experiences": ["food"],
                                          "train_per_experience": 9, "test_per_experience": 6})
    exp = build_stream(cfg, 0).experiences[0]
    assert cfg.val_per_experience == 0 and len(exp.val) == 0 and exp.val.rows.dtype == np.int64


def test_tokenized_stream_carries_val_only_when_there_is_one():
    from clsim.config import ModelConfig
    from clsim.models import tokenize_stream

    model = ModelConfig(pretrained="tiny", max_length=16)
    with_val = tokenize_stream(build_stream(syn(["food", "tech"], 9, 3, 6), 0), model)
    assert [len(s.labels) for s in with_val.val] == [3, 3] and len(with_val.val[0].ids) == 3
    assert tokenize_stream(build_stream(syn(["food"], 9, 0, 6), 0), model).val == []


# --------------------------------------------------------------------------- planted duplicates in a file
def planted(tmp_path, n=30) -> Path:
    """Two domains of unique rows, plus a text planted three times (exact and normalised-only
    copies, across both domains) and a text whose copies disagree on the label."""
    rows = [{"text": f"{d} unique review {i}", "label": ["bad", "meh", "good"][i % 3], "domain": d}
            for d in ("a", "b") for i in range(n)]
    rows.insert(3, {"text": "Great flight to Boston", "label": "good", "domain": "a"})
    rows.insert(20, {"text": "Great flight to Boston", "label": "good", "domain": "a"})                   # exact
    rows.insert(40, {"text": "RT @bob: great  flight to BOSTON http://t.co/x", "label": "good", "domain": "b"})
    rows.insert(7, {"text": "lost my bag", "label": "bad", "domain": "a"})
    rows.insert(50, {"text": "Lost my bag @united", "label": "good", "domain": "b"})                     # conflict
    path = tmp_path / "planted.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_planted_duplicate_never_spans_splits_and_conflicts_are_dropped(tmp_path, caplog):
    path = planted(tmp_path)
    cfg = fstream(path, 15, 10, 5, domain_column="domain", experiences=["a", "b"])  # b: every usable row drawn
    for seed in range(8):
        with caplog.at_level(logging.INFO, logger="clsim.data.clean"):
            stream = build_stream(cfg, seed)
        keys = [normalise(t) for e in stream.experiences for s in SPLITS for t in getattr(e, s).texts]
        assert len(keys) == len(set(keys)), seed  # no text in two places, across splits and experiences
        assert keys.count("great flight to boston") <= 1 and "lost my bag" not in keys
    assert stream.dedup == {"rows": 65, "exact_duplicates": 1, "normalised_duplicates": 3, "conflicting_groups": 1,
                            "conflicting_rows": 2, "kept": 61}
    assert "planted.csv: 65 rows, 1 exact duplicates, 3 duplicates after normalising; dropped 1 conflicting" in caplog.text


def test_dedupe_false_keeps_duplicates_in_a_file(tmp_path):
    from clsim.data.stream import read_source

    path = planted(tmp_path)
    cfg = fstream(path, 15, 10, 5, domain_column="domain", experiences=["a", "b"], dedupe=False)
    src = read_source(cfg, 0)
    assert src.dedup is None and src.description["dedupe"] is False
    assert [len(p.texts) for p in src.pools] == [33, 32]
    assert src.pools[0].texts.count("Great flight to Boston") == 2
    kept = read_source(cfg.model_copy(update={"dedupe": True}), 0).pools
    assert [len(p.texts) for p in kept] == [31, 30]
    assert kept[0].rows[kept[0].texts.index("Great flight to Boston")] == 3  # the first copy in file order
    assert 7 not in kept[0].rows  # "lost my bag": its copy disagrees on the label


# --------------------------------------------------------------------------- min_confidence
@pytest.fixture
def fake_corpus(monkeypatch):
    """A six-row stand-in for the tweet corpus (the real one is tested in the slow test below)."""
    from clsim.data import tweets

    df = pd.DataFrame({"text": ["@united late again", "@united great crew", "@united ok flight", "@united so so",
                                "claritin works", "claritin again"],
                       "label": ["negative", "positive", "neutral", "neutral", "neutral", "positive"],
                       "confidence": [1.0, 0.4, 0.7, np.nan, np.nan, np.nan],
                       "topic": ["airline"] * 4 + ["claritin"] * 2}, index=[10, 11, 12, 13, 20, 21])
    monkeypatch.setattr(tweets, "load_tweets", lambda: df)
    tweets.usable.cache_clear()
    yield tweets
    tweets.usable.cache_clear()


def test_min_confidence_keeps_rows_without_a_confidence(fake_corpus):
    cfg = TweetsStream(source="tweets", train_per_experience=1, test_per_experience=1,
                       experiences=["airline", "claritin"], min_confidence=0.6)
    pools = fake_corpus.source(cfg).pools
    assert [p.rows.tolist() for p in pools] == [[10, 12, 13], [20, 21]]  # 11 (0.4) dropped; NaN kept
    assert fake_corpus.source(cfg.model_copy(update={"min_confidence": None})).pools[0].rows.tolist() == [10, 11, 12, 13]


def test_train_per_topic_draws_that_topic_more_and_leaves_the_others_draw_alone(fake_corpus, monkeypatch):
    from clsim.data import stream as stream_module

    base = TweetsStream(source="tweets", train_per_experience=1, test_per_experience=1,
                        experiences=["airline", "claritin"])
    sized = base.model_copy(update={"train_per_topic": {"airline": 2}})
    monkeypatch.setattr(stream_module, "check_test_labels", lambda *a, **k: None)  # six rows: too few to hold every label
    a, b = build_stream(base, 3), build_stream(sized, 3)
    assert [len(e.train.labels) for e in a.experiences] == [1, 1]
    assert [len(e.train.labels) for e in b.experiences] == [2, 1]
    assert b.experiences[1].train.rows.tolist() == a.experiences[1].train.rows.tolist()  # claritin: same draw
    assert split_record(b)["draw"]["train_per_topic"] == {"airline": 2}
    assert "train_per_topic" not in split_record(a)["draw"]


@pytest.mark.parametrize("update, message", [
    ({"train_per_topic": {"cars": 5}}, "not in experiences"),
    ({"train_per_topic": {"airline": 5}, "protocol": "online"}, "experiences protocol"),
])
def test_train_per_topic_names_streamed_topics_and_only_the_experiences_protocol(update, message):
    with pytest.raises(ValueError, match=message):
        TweetsStream.model_validate({"source": "tweets", "train_per_experience": 1, "test_per_experience": 1,
                                     "experiences": ["airline", "claritin"], **update})


# --------------------------------------------------------------------------- the split record
def round_trip(stream) -> None:
    record = json.loads(json.dumps(split_record(stream)))  # JSON-able, and read back from JSON
    back = read_record(record)
    assert list(back) == [e.name for e in stream.experiences]
    for exp in stream.experiences:
        for s in SPLITS:
            split = getattr(exp, s)
            texts, labels = back[exp.name][s]
            assert texts == split.texts, (exp.name, s)
            assert labels == [stream.label_names[y] for y in split.labels], (exp.name, s)


def test_split_record_round_trip_synthetic():
    stream = build_stream(syn(["food", {"domain": "travel", "flip": True, "label_prior": [1, 2, 3]}]), 5)
    record = split_record(stream)
    assert record["format"] == "clsim-splits/1" and record["dedup"] is None
    assert record["draw"]["seed"] == 5 and record["draw"]["val_per_experience"] == 12
    assert list(record["experiences"]) == ["food", "travel_flipped"]
    assert len(record["experiences"]["food"]["val"]) == 12
    round_trip(stream)


def test_split_record_round_trip_file_and_rows_are_the_users_rows(tmp_path):
    path = planted(tmp_path)
    stream = build_stream(fstream(path, 15, 10, 5, domain_column="domain", experiences=["a", "b"]), 1)
    round_trip(stream)
    record = split_record(stream)
    assert record["dedup"]["kept"] == 61 and record["source"]["path"] == str(path)
    with open(path, newline="") as f:  # an auditor needs no clsim: row id k is the k-th data row of the CSV
        data = list(csv.DictReader(f))
    exp = stream.experiences[1]
    assert [data[r]["text"] for r in record["experiences"]["b"]["test"]] == exp.test.texts
    with open(path, "a") as f:
        f.write("appended later,good,a\n")
    with pytest.raises(ValueError, match="changed since the record was written"):
        read_record(record)


# --------------------------------------------------------------------------- clsim validate stays light
def test_validate_imports_no_heavy_library():
    code = ("import sys\nfrom clsim.cli import app\n"
            "try:\n    app(['validate', sys.argv[1]])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('MODULES', ' '.join(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "scenarios" / "smoke.yaml")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "48 train / 0 val / 24 test" in proc.stdout
    modules = next(line for line in proc.stdout.splitlines() if line.startswith("MODULES ")).split()[1:]
    heavy = sorted({m.split(".")[0] for m in modules} & {"torch", "avalanche", "flwr", "ray", "sklearn", "scipy",
                                                        "transformers", "pandas"})
    assert heavy == []


# --------------------------------------------------------------------------- the real corpus
# rows per topic after corpus-wide dedup, and the majority-class rate. Deduplicating each topic on
# its own would keep 4 more apple rows (2,762): their normalised text ("thank you", "i hate you", ...
# once the @mention is gone) first occurs in another topic, and corpus-wide dedup keeps that one.
USABLE = {"airline": (14_240, .637), "coachella": (3_458, .611), "claritin": (1_608, .832),
          "cars": (4_138, .876), "deflategate": (8_107, .522), "apple": (2_758, .517)}


@pytest.mark.slow
def test_real_corpus_dedup_counts_min_confidence_and_record():
    from clsim.data import tweets

    _, counts = tweets.usable(None)
    assert counts.as_dict() == {"rows": 38_158, "exact_duplicates": 915, "normalised_duplicates": 2_972,
                                "conflicting_groups": 293, "conflicting_rows": 1_739, "kept": 34_893}
    table = tweets.topic_counts(deduplicated=True)
    for topic, (n, majority) in USABLE.items():
        assert table.loc[topic, "total"] == n, topic
        assert round(table.loc[topic, ["negative", "neutral", "positive"]].max() / n, 3) == majority, topic

    # claritin and coachella carry no confidence: a threshold must not empty them
    confident, _ = tweets.usable(0.9)
    per_topic = confident["topic"].value_counts()
    assert per_topic["claritin"] == USABLE["claritin"][0]
    assert per_topic["airline"] < 0.8 * USABLE["airline"][0]

    cfg = TweetsStream(source="tweets", train_per_experience=300, val_per_experience=100, test_per_experience=200,
                       experiences=["apple", "claritin"])
    stream = build_stream(cfg, 0)
    assert stream.dedup == counts.as_dict() and stream.source["kind"] == "tweets"
    keys = [normalise(t) for e in stream.experiences for s in SPLITS for t in getattr(e, s).texts]
    assert len(keys) == len(set(keys)) == 2 * 600
    round_trip(stream)
