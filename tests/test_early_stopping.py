"""Early stopping on validation splits (``train.patience``, EarlyStoppingPlugin): which epoch is
kept, when training stops, that only validation data is scored, and that what comes after an
experience (EWC's anchor, the next experience, a checkpoint) sees the kept weights."""
from __future__ import annotations

import json

import pytest
import torch
from avalanche.core import SupervisedPlugin
from conftest import plan_of, resolve

from clsim.learner import Learner
from clsim.strategies.plugins import EarlyStoppingPlugin

STREAM = {"source": "synthetic", "experiences": ["food", "tech", "travel"], "train_per_experience": 48,
          "val_per_experience": 16, "test_per_experience": 24}


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Snapshots(SupervisedPlugin):
    """The weights at the start of every epoch (after the probe) and at the end of every epoch
    (before early stopping looks), and at the end of the experience."""

    def __init__(self):
        super().__init__()
        self.start, self.end, self.final = [], [], None
        self.first = {}  # experience -> the weights its first epoch starts from (after the probe)

    def before_training_epoch(self, strategy, **kw):
        self.start.append(weights(strategy.model))  # (Avalanche calls it once more before an early stop)
        self.first.setdefault(strategy.experience.current_experience, self.start[-1])

    def after_training_epoch(self, strategy, **kw):
        self.end.append(weights(strategy.model))

    def after_training_exp(self, strategy, **kw):
        self.final = weights(strategy.model)


def learner(make_scenario, tokens_for, ref="naive", scores=None, **train):
    sc = make_scenario(stream=STREAM, train={"epochs": 4, "batch_size": 16, "lr": 1e-3, "patience": 1, **train})
    lr = Learner(sc, resolve(ref, train=sc.train, experiences=3), tokens_for(sc))
    snaps = Snapshots()
    lr.strategy.plugins.insert(0, snaps)  # first: sees each epoch's weights before early stopping acts
    stop = lr.plugin(EarlyStoppingPlugin)
    if scores is not None:  # scripted validation scores: epoch 0 (the probe's model), 1, 2, …
        it = iter(scores)
        stop.score = lambda i: next(it)
    return lr, stop, snaps


def test_stops_after_patience_and_keeps_the_best_epoch(make_scenario, tokens_for):
    lr, stop, snaps = learner(make_scenario, tokens_for, scores=[0.5, 0.7, 0.6, 0.9], patience=1)
    lr.train_experience(0)
    assert len(snaps.end) == 2  # epoch 2 did not beat epoch 1: stopped, epochs 3-4 never ran
    assert lr.probe.samples == [2 * 48]  # the discarded epoch still counts as samples trained
    assert not same(snaps.end[0], snaps.end[1])
    assert same(snaps.final, snaps.end[0])  # epoch 1's weights were restored
    assert same(weights(lr.model), snaps.end[0])
    assert (stop.experience, stop.epochs, stop.best_epoch, stop.best_score) == ([0], [2], [1], [0.7])


def test_the_probes_model_is_epoch_zero(make_scenario, tokens_for):
    """A fine-tuning that never beats the linear probe's model on validation is undone."""
    lr, stop, snaps = learner(make_scenario, tokens_for, scores=[0.8, 0.8, 0.7], patience=2)
    lr.train_experience(0)
    assert len(snaps.end) == 2 and stop.best_epoch == [0]  # a tie keeps the earlier model
    assert same(snaps.final, snaps.first[0]) and not same(snaps.final, snaps.end[-1])


def test_improving_runs_every_epoch_and_keeps_the_last(make_scenario, tokens_for):
    lr, stop, snaps = learner(make_scenario, tokens_for, scores=[0.1, 0.2, 0.3, 0.4, 0.5], patience=1)
    lr.train_experience(0)
    assert len(snaps.end) == 4 and stop.epochs == [4] and stop.best_epoch == [4]
    assert same(snaps.final, snaps.end[-1])


def test_every_experience_starts_afresh(make_scenario, tokens_for):
    lr, stop, snaps = learner(make_scenario, tokens_for, scores=[0.9, 0.1, 0.2, 0.5, 0.6, 0.1], patience=1)
    lr.train_experience(0)  # 0.9 then 0.1: one epoch, the probe's model kept
    lr.train_experience(1)  # 0.2, 0.5, 0.6, 0.1: three epochs, epoch 2 kept
    assert stop.experience == [0, 1] and stop.epochs == [1, 3] and stop.best_epoch == [0, 2]
    backbone = lambda w: {k: v for k, v in w.items() if k.startswith("backbone.")}  # noqa: E731
    assert same(backbone(snaps.first[1]), backbone(snaps.first[0]))  # experience 1 went on from the kept model
    assert same(snaps.final, snaps.end[-2])


def test_scores_read_validation_splits_only(make_scenario, tokens_for, monkeypatch):
    """The real score: accuracy on the current experience's validation split — never a test split."""
    import clsim.learner as L

    seen = []
    real = L.confusion_row

    def spy(model, splits, *a, **kw):
        seen.extend(splits)
        return real(model, splits, *a, **kw)

    monkeypatch.setattr(L, "confusion_row", spy)
    lr, stop, _ = learner(make_scenario, tokens_for, patience=2)
    lr.train_experience(0)
    lr.train_experience(1)
    val, test = lr.tokens.val, lr.tokens.test
    assert seen and all(any(s is v for v in val[:2]) for s in seen)
    assert not any(s is t for s in seen for t in test)
    assert sum(s is val[1] for s in seen) == stop.epochs[1] + 1  # epoch 0 and every epoch run
    expected = L.M.accuracy(real(lr.model, [val[1]], len(lr.tokens.label_names), 64, "cpu")[0])
    assert stop.best_score[1] == pytest.approx(expected)  # the kept model scores what was recorded


def test_ewc_anchors_the_kept_weights(make_scenario, tokens_for):
    """EWC computes its importances and anchor after training: on the restored model."""
    from avalanche.training.plugins import EWCPlugin

    lr, stop, snaps = learner(make_scenario, tokens_for, ref="ewc", scores=[0.9, 0.1, 0.1], patience=2)
    lr.train_experience(0)
    ewc = lr.plugin(EWCPlugin)
    anchor = {k: p.data for k, p in ewc.saved_params[0].items()}
    kept = dict(lr.model.named_parameters())
    assert same(snaps.final, snaps.first[0])
    assert all(torch.equal(anchor[k], kept[k].detach()) for k in anchor)


def test_frozen_backbone_scores_cached_features(make_scenario, tokens_for):
    sc = make_scenario(stream=STREAM, model={"pretrained": "tiny", "finetune": "head", "max_length": 32},
                       train={"epochs": 3, "batch_size": 16, "lr": 1e-2, "patience": 1})
    lr = Learner(sc, resolve("naive", train=sc.train, experiences=3), tokens_for(sc))
    assert lr.cached and len(lr.val_features) == 3
    lr.train_experience(0)
    stop = lr.plugin(EarlyStoppingPlugin)
    assert stop.epochs[0] >= 1 and 0 <= stop.best_epoch[0] <= stop.epochs[0]
    assert stop.best_score[0] == pytest.approx(lr.val_accuracy(0))


def test_records_and_resume(make_scenario, tokens_for, tmp_path):
    """metrics.json records each experience's epochs and kept epoch; a run resumed from its
    checkpoint after experience 1 ends with the same metrics as an uninterrupted one."""
    from test_reliability import Crash, comparable, crash_at

    from clsim.lifecycle import run_strategy

    sc = make_scenario(stream=STREAM, train={"epochs": 3, "batch_size": 16, "lr": 1e-3, "patience": 1},
                       strategies=["naive"])
    plan = plan_of(sc)
    spec, tokens = plan.strategies[0], tokens_for(sc)
    whole = run_strategy(plan, spec, tokens, str(tmp_path / "a"))
    es = whole["costs"]["early_stopping"]
    assert es["experience"] == [0, 1, 2] and all(1 <= e <= 3 for e in es["epochs"])
    assert whole["costs"]["epochs_trained"] == sum(es["epochs"])
    assert whole["costs"]["samples_trained"] == 48 * sum(es["epochs"])
    with pytest.raises(Crash):
        run_strategy(plan, spec, tokens, str(tmp_path / "b"), progress=crash_at("done_exp", 1))
    doc = run_strategy(plan, spec, tokens, str(tmp_path / "b"), resume={"reason": "resume"})
    assert comparable(doc) == comparable(whole)
    on_disk = json.loads((tmp_path / "b" / "naive" / "seed_0" / "metrics.json").read_text())
    assert on_disk["costs"]["early_stopping"] == es


def test_off_by_default(make_scenario, tokens_for):
    sc = make_scenario(stream=STREAM, train={"epochs": 2, "batch_size": 16, "lr": 1e-3})
    lr = Learner(sc, resolve("naive", train=sc.train, experiences=3), tokens_for(sc))
    assert lr.plugin(EarlyStoppingPlugin) is None and "early_stopping" not in lr.costs()
