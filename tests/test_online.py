"""The online (prequential) protocol: arrivals, metrics against hand-computed values, the order of
serving and learning, labels honoured, detectors scored, and resume mid-stream."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import plan_of

from clsim import online_metrics as OM
from clsim.data.arrivals import arrivals, ramp, segment_steps

ONLINE_STREAM = {"source": "synthetic", "experiences": ["food", {"domain": "tech", "label_prior": [0.6, 0.2, 0.2]},
                                                         {"domain": "travel", "flip": True}],
                 "train_per_experience": 48, "test_per_experience": 12, "protocol": "online", "arrival_batch": 8,
                 "transition": {"kind": "gradual", "width": 2}}


# --------------------------------------------------------------------------- arrivals
def test_gradual_transition_mixes_in_known_proportions():
    a = arrivals([100, 100, 100, 100], 10, seed=0, gradual=True, width=3)
    assert ramp(3, 10) == [2, 5, 8]  # round(10/4), round(20/4), round(30/4) (half to even: 2.5 -> 2)
    # segment 1: no ramp (its predecessor is the deployment), keeps 10 - 2 + 10 - 5 + 10 - 8 = 15 texts
    # for the next ramp: (100 - 15) // 10 = 8 steps; middle: 3 + (100 - 15 - 15) // 10 = 10; last: 3 + 85 // 10 = 11
    assert segment_steps([100] * 4, 10, 3) == [8, 10, 11]
    assert a.segments == [(1, 0, 8), (2, 8, 10), (3, 18, 11)] and a.drift_points == [8, 18] and a.steps == 29
    for first, prev, new in ((8, 1, 2), (18, 2, 3)):
        for k, n_new in enumerate([2, 5, 8]):
            idx = a.at(first + k)
            assert (a.experience[idx] == new).sum() == n_new and (a.experience[idx] == prev).sum() == 10 - n_new
            assert a.new_share[first + k] == n_new / 10
        assert (a.experience[a.at(first + 3)] == new).all()  # after the ramp: the new topic alone
    pairs = list(zip(a.experience.tolist(), a.position.tolist()))
    assert len(set(pairs)) == len(pairs)  # no text arrives twice
    assert all(0 <= p < 100 for p in a.position) and 0 not in a.experience  # the deployment never arrives


def test_abrupt_transition_and_label_mask():
    a = arrivals([40, 40, 40], 8, seed=3, label_delay=2, label_fraction=0.3)
    assert a.segments == [(1, 0, 5), (2, 5, 5)] and a.drift_points == [5]
    labelled = a.label_step >= 0
    assert labelled.sum() == round(0.3 * 80) == 24
    assert (a.label_step[labelled] == a.step[labelled] + 2).all()
    assert set(a.revealed(4)) == set(np.flatnonzero(labelled & (a.step == 2)))
    assert arrivals([40, 40, 40], 8, seed=3, label_fraction=0.3).label_step.tolist() != \
        arrivals([40, 40, 40], 8, seed=4, label_fraction=0.3).label_step.tolist()  # seeded


# --------------------------------------------------------------------------- metrics
def test_online_accuracy_and_majority_by_hand():
    C1 = [[3, 1, 0], [0, 2, 0], [0, 0, 2]]  # acc 7/8, recalls 3/4, 1, 1
    C2 = [[0, 4, 0], [0, 4, 0], [0, 0, 0]]  # acc 4/8, recalls 0, 1 (label 2 absent)
    assert OM.online_accuracy([C1, C2]) == pytest.approx((7 / 8 + 4 / 8) / 2)
    assert OM.online_balanced_accuracy([C1, C2]) == pytest.approx(((3 / 4 + 1 + 1) / 3 + (0 + 1) / 2) / 2)
    # label supports: step 1 (4, 2, 2), step 2 (4, 4, 0) -> label 0 most common (8): shares 4/8, 4/8
    assert OM.majority_online([C1, C2]) == pytest.approx(0.5)


def test_detection_delay_false_alarms_and_misses_by_hand():
    det = OM.detection([3, 12, 14, 30], drifts=[10, 20], steps=40, batch=8)
    assert det["delays_steps"] == [2, 10] and det["delays_arrivals"] == [16, 80]
    assert (det["detected"], det["missed_drifts"], det["false_alarms"]) == (2, 0, 2)  # 3: before any drift; 14: second
    assert det["mean_delay_steps"] == 6.0
    capped = OM.detection([3, 12, 14, 30], drifts=[10, 20], steps=40, batch=8, max_delay=5)
    assert (capped["detected"], capped["missed_drifts"], capped["false_alarms"]) == (1, 1, 3)
    none = OM.detection([], drifts=[10], steps=20, batch=[8] * 20)
    assert none["missed_drifts"] == 1 and math.isnan(none["mean_delay_steps"])


def test_river_detector_on_a_synthetic_stream_with_known_change_points():
    """ADWIN fed a per-arrival error that jumps from 10 % to 60 % at step 20 and back at step 40 (32
    arrivals per step): it alarms within a few steps of each change and never before the first."""
    from clsim.strategies.plugins import OnlinePolicyPlugin

    rng = np.random.default_rng(0)
    policy = OnlinePolicyPlugin(update="drift", detector="ADWIN", signal="error")
    alarms = []
    for t in range(60):
        rate = 0.6 if 20 <= t < 40 else 0.1
        if policy.observe(rng.random(32) < rate):
            alarms.append(t)
    det = OM.detection(alarms, drifts=[20, 40], steps=60, batch=32)
    assert det["missed_drifts"] == 0 and all(d <= 5 for d in det["delays_steps"]), (alarms, det)
    assert not [a for a in alarms if a < 20]


# --------------------------------------------------------------------------- the prequential loop
@pytest.fixture
def online_scenario(make_scenario):
    def make(strategies, **stream):
        return make_scenario(stream={**ONLINE_STREAM, **stream}, strategies=strategies)
    return make


def run_one(scenario, tokens, tmp_path, name=None, resume=None):
    from clsim.online import run_online

    plan = plan_of(scenario).for_seed(scenario.seed)
    spec = plan.strategy(name) if name else plan.strategies[0]
    return run_online(plan, spec, tokens, tmp_path, resume=resume)


def test_label_leak_model_scores_chance_on_arrival(online_scenario, tokens_for, tmp_path, monkeypatch):
    """A planted model that memorises the labels of every batch it learns from, and guesses otherwise:
    were batches learned before they are scored, it would score 1.0; prequentially it guesses."""
    from clsim.online import OnlineTrainer

    sc = online_scenario(["online"], transition={"kind": "abrupt", "width": 1})
    memory: dict[int, int] = {}
    guess = np.random.default_rng(0)

    def predict(self, idx):
        out = np.zeros((len(idx), 3))
        for k, i in enumerate(idx):
            out[k, memory.get(int(self.sample_ids[i]), int(guess.integers(3)))] = 1.0
        return out

    def fit(self, idx, step, refit):
        memory.update({int(self.sample_ids[i]): int(self.labels[i]) for i in idx})
        return 0.0, len(idx)

    monkeypatch.setattr(OnlineTrainer, "predict", predict)
    monkeypatch.setattr(OnlineTrainer, "fit", fit)
    doc = run_one(sc, tokens_for(sc), tmp_path)
    assert doc["updates"] == doc["online"]["steps_total"] > 0  # it learned every batch ...
    assert len(memory) == sum(s["n"] for s in doc["online"]["steps"])  # ... every arrival ...
    assert doc["online_acc"] < 0.5  # ... and scored chance (1/3) on what arrived, not 1.0


def test_label_delay_and_fraction_are_honoured(online_scenario, tokens_for, tmp_path, monkeypatch):
    """What the Avalanche strategy was given to train on: only labelled arrivals, each exactly
    ``label_delay`` steps after it arrived; the detector of a confidence signal reads no label."""
    from clsim.online import OnlineTrainer

    sc = online_scenario(["online", {"preset": "periodic_online", "every": 3, "recent": 12}],
                         label_delay=2, label_fraction=0.5)
    touched: list[tuple[int, list[int], list[int]]] = []
    original = OnlineTrainer.fit

    def fit(self, idx, step, refit):
        strategy, given = self.learner.strategy, []

        def train(exp, **kwargs):  # what Avalanche's strategy is handed
            given.extend(int(i) for i in exp.dataset.sample_ids)
            return type(strategy).train(strategy, exp, **kwargs)

        strategy.train = train
        try:
            seconds, samples = original(self, idx, step, refit)
        finally:
            del strategy.train
        touched.append((step, sorted(self.sample_ids[idx].tolist()), sorted(given)))
        return seconds, samples

    monkeypatch.setattr(OnlineTrainer, "fit", fit)
    tokens = tokens_for(sc)
    doc = run_one(sc, tokens, tmp_path / "a", "online")
    from clsim.online import stream_arrivals

    arr = stream_arrivals(sc, tokens)
    ids = np.asarray([0, 48, 96])[arr.experience] + arr.position  # sample ids: offsets of the 48-text splits
    step_of = dict(zip(ids.tolist(), zip(arr.step.tolist(), arr.label_step.tolist())))
    for step, ids, given in touched:
        assert ids == given  # the strategy trained on exactly these
        for i in ids:
            arrived, labelled_at = step_of[i]
            assert labelled_at == step and arrived == step - 2  # labelled, and only 2 steps later
    learned = {i for _, ids, _ in touched for i in ids}
    assert len(learned) == doc["labels_consumed"] == int(((arr.label_step >= 0) & (arr.label_step < arr.steps)).sum())
    assert len(learned) < len(arr.step) * 0.6  # half the arrivals never got a label
    touched.clear()
    run_one(sc, tokens, tmp_path / "b", "periodic_online")
    assert [s for s, _, _ in touched] == [t for t in range(arr.steps) if (t + 1) % 3 == 0]
    for step, ids, _ in touched:  # the window: the 12 most recent labels available by then
        available = [i for i, (_, lab) in step_of.items() if 0 <= lab <= step]
        assert set(ids) <= set(available) and len(ids) == min(12, len(available))


def strip(doc):
    """A document without wall-clock measurements and resume notes."""
    if isinstance(doc, dict):
        return {k: strip(v) for k, v in doc.items()
                if "seconds" not in k and "_ms_" not in k and k not in ("resumes", "restarts")}
    if isinstance(doc, list):
        return [strip(v) for v in doc]
    return doc


@pytest.mark.parametrize("strategy", [
    {"preset": "drift_refinetune", "detector": "KSWIN", "signal": "confidence", "recent": 16, "warmup": 0,
     "cooldown": 1, "detector_params": {"window_size": 16, "stat_size": 6, "alpha": 0.5}},
    {"preset": "replay", "storage": "class", "mem_size": 24}])
def test_resume_mid_stream_equals_uninterrupted(online_scenario, tokens_for, tmp_path, monkeypatch, strategy):
    import clsim.online
    from clsim.online import OnlineTrainer

    sc = online_scenario([strategy])
    tokens = tokens_for(sc)
    whole = run_one(sc, tokens, tmp_path / "whole")
    monkeypatch.setattr(clsim.online, "CHECKPOINT_EVERY", 2)
    real_step = OnlineTrainer._step

    def crash(self, t):
        if t == 8:  # mid-segment of experience 2 (steps 5..11), one step after the checkpoint taken after step 6
            raise KeyboardInterrupt("killed")
        real_step(self, t)

    monkeypatch.setattr(OnlineTrainer, "_step", crash)
    with pytest.raises(KeyboardInterrupt):
        run_one(sc, tokens, tmp_path / "cut")
    monkeypatch.setattr(OnlineTrainer, "_step", real_step)
    resumed = run_one(sc, tokens, tmp_path / "cut", resume={"reason": "resume"})
    assert resumed["resumes"][0]["from_step"] == 7
    assert json.dumps(strip(resumed), sort_keys=True) == json.dumps(strip(whole), sort_keys=True)
    if "detector" in strategy:
        assert whole["alarms"] > 0  # the checkpointed detector mattered


def test_online_run_reports_and_plot(online_scenario, tokens_for, tmp_path):
    """Both views of one run: R at every boundary and the online record; aggregate, table, plot."""
    from clsim import report
    from clsim.results import aggregate, write_strategy_results
    from clsim.tables import table, write_summary

    sc = online_scenario(["frozen", "online"])
    tokens = tokens_for(sc)
    docs = []
    for name in ("frozen", "online"):
        doc = run_one(sc, tokens, tmp_path, name)
        assert len(doc["accuracy_matrix"]) == 3 and doc["complete"] and doc["protocol"] == "online"
        steps = doc["online"]["steps"]
        assert doc["online_acc"] == pytest.approx(np.mean([np.trace(s["confusion"]) / s["n"] for s in steps]))
        agg = aggregate([doc], [0])
        assert agg["online_curve"]["samples_cumulative"][-1] == agg["online_samples"] == doc["online_samples"]
        assert agg["online_samples"] == sum(s["samples"] for s in steps) and "online_samples" in agg["intervals"]
        write_strategy_results(tmp_path / name, agg)
        docs.append(agg)
    assert docs[0]["updates"] == 0 and docs[0]["labels_consumed"] == 0 and docs[1]["updates"] > 0
    assert (tmp_path / "frozen" / "seed_0" / "online").is_dir()  # per-step TensorBoard scalars
    cols, rows = table(docs)
    assert [c.key for c in cols][:3] == ["strategy", "online_acc", "online_bal_acc"]
    assert rows[-1][0].value == "majority class"
    write_summary(tmp_path, docs)
    assert "Difference to `frozen`" in (tmp_path / "summary.md").read_text()
    written = report.write_comparison(report.load([tmp_path]), tmp_path / "cmp", baselines=["online"])
    assert written["online_accuracy.png"].stat().st_size > 10_000
    text = written["comparison.md"].read_text()
    assert "Difference to `frozen`" in text and "Difference to `online`" in text and "Margin over the trivial" in text
    from clsim.config import ConfigError

    with pytest.raises(ConfigError, match="--baseline"):
        report.write_comparison(report.load([tmp_path]), tmp_path / "cmp", baselines=["periodic"])


def test_online_margins_over_majority_and_chance_by_hand():
    from clsim.tables import online_margins_markdown

    doc = {"strategy": "a", "protocol": "online", "labels": ["x", "y", "z"],
           "per_seed": {"online_acc": {"0": 0.6, "1": 0.7}, "online_majority": {"0": 0.5, "1": 0.5},
                        "online_bal_acc": {"0": 0.4, "1": 0.5}}}
    lines = online_margins_markdown([doc])
    # differences 0.1, 0.2: mean 0.15, half width t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.0707 / 1.414 = 0.635
    # balanced: 0.4 - 1/3, 0.5 - 1/3: mean 0.117, the same half width
    assert lines[-1] == "| a | +0.150 [-0.485, +0.785] | +0.117 [-0.519, +0.752] |", lines
    assert "paired over 2 seed(s)" in lines[0]
    assert online_margins_markdown([{**doc, "protocol": None}]) == []
