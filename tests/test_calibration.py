"""Calibration on validation splits (``train.calibrate``, CalibrationPlugin): the offsets solve
the prior-matching condition, the temperature undoes over-confidence, both are folded into the head
and nothing else, come from the trained experience's validation split only, and are what EWC's
anchor and LwF's teacher see."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from avalanche.training.plugins import EWCPlugin
from conftest import resolve

from clsim.learner import Learner
from clsim.strategies.plugins import CalibrationPlugin, EvalTeacherLwFPlugin
from clsim.strategies.plugins.calibration import fit_calibration

STREAM = {"source": "synthetic", "experiences": ["food", "tech", "travel"], "train_per_experience": 48,
          "val_per_experience": 24, "test_per_experience": 24}


def test_offsets_of_constant_logits_are_the_log_prior():
    """Logits that say nothing: the fitted offsets are the validation labels' log frequencies."""
    y = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)
    d, t = fit_calibration(torch.zeros(100, 3), y)
    assert t == 1.0
    assert torch.softmax(d, 0).tolist() == pytest.approx([0.80, 0.15, 0.05], abs=2e-3)
    assert float(d.mean()) == pytest.approx(0.0, abs=1e-6)


def test_calibrated_probabilities_average_to_the_label_frequencies():
    """Cross-entropy's gradient in a class's offset is (mean predicted probability - frequency), so
    at the optimum the calibrated model's mean probability of every class is its frequency —
    whatever skew the logits had."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 3, generator=g) * 2 + torch.tensor([2.0, 0.0, -1.0])  # over-calls class 0
    y = torch.cat([torch.zeros(40), torch.ones(100), torch.full((60,), 2.0)]).long()
    for temperature in (False, True):
        d, t = fit_calibration(logits, y, temperature=temperature)
        assert torch.softmax(logits / t + d, 1).mean(0).tolist() == pytest.approx([0.2, 0.5, 0.3], abs=5e-3)
        assert torch.nn.functional.cross_entropy(logits / t + d, y) < torch.nn.functional.cross_entropy(logits, y)


def test_temperature_of_an_over_confident_model_is_above_one():
    """Logits that carry the label but twice too sharply: the fitted temperature is about 2."""
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (4000,), generator=g)
    true = torch.randn(4000, 3, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 3)
    y = torch.distributions.Categorical(logits=true).sample()  # labels drawn from the true logits
    d, t = fit_calibration(2 * true, y, temperature=True)
    assert t == pytest.approx(2.0, rel=0.1)


def learner(make_scenario, tokens_for, ref="naive", model_finetune="full", **train) -> Learner:
    sc = make_scenario(stream=STREAM, train={"epochs": 1, "batch_size": 16, "lr": 1e-3, **train},
                       model={"pretrained": "tiny", "finetune": model_finetune, "max_length": 32})
    return Learner(sc, resolve(ref, train=sc.train, experiences=3), tokens_for(sc))


@pytest.mark.parametrize("method", ["bias", "bcts"])
def test_calibration_is_folded_into_the_head_and_nothing_else(make_scenario, tokens_for, method):
    plain = learner(make_scenario, tokens_for)
    cal = learner(make_scenario, tokens_for, calibrate=method)
    seen = []
    plugin = cal.plugin(CalibrationPlugin)
    reader = plugin.val
    plugin.val = lambda i: seen.append(i) or reader(i)
    plain.train_experience(0)
    cal.train_experience(0)
    a, b = plain.model.state_dict(), cal.model.state_dict()
    t = plugin.temperatures[0]
    assert (t == 1.0) == (method == "bias")
    assert [k for k in a if not torch.equal(a[k], b[k])] == (["head.weight", "head.bias"] if method == "bcts"
                                                             else ["head.bias"])
    assert torch.allclose(b["head.weight"], a["head.weight"] / t)
    assert (b["head.bias"] - a["head.bias"] / t).tolist() == pytest.approx(plugin.offsets[0], abs=1e-6)
    assert seen == [0]  # the trained experience's validation split, nothing else
    X, y = reader(0)
    assert torch.equal(y, torch.as_tensor(np.asarray(cal.tokens.val[0].labels)))
    with torch.no_grad():
        mean_p = torch.softmax(cal.model.head(X), 1).mean(0)
    freq = torch.bincount(y, minlength=mean_p.numel()).float() / len(y)
    assert mean_p.tolist() == pytest.approx(freq.tolist(), abs=5e-3)
    assert cal.costs()["calibration"] == {"offsets": plugin.offsets, "temperatures": [t]}


@pytest.mark.parametrize("ref", ["ewc", "lwf"])
def test_anchor_and_teacher_are_the_calibrated_model(make_scenario, tokens_for, ref):
    cal = learner(make_scenario, tokens_for, ref=ref, calibrate="bias")
    cal.train_experience(0)
    bias = cal.model.head.bias.detach()
    if ref == "ewc":
        kept = cal.plugin(EWCPlugin).saved_params[0]["head.bias"].data
    else:
        kept = cal.plugin(EvalTeacherLwFPlugin).lwf.prev_model.head.bias.detach()
    assert torch.equal(kept, bias)
    assert torch.tensor(cal.plugin(CalibrationPlugin).offsets[0]).abs().max() > 1e-4  # the bias did move


def test_frozen_backbone_calibrates_the_shared_head(make_scenario, tokens_for):
    """``finetune: head`` trains a FeatureHead on cached features; the calibration must land in
    the classifier's own head (they share it) and use the cached validation features."""
    plain = learner(make_scenario, tokens_for, model_finetune="head")
    cal = learner(make_scenario, tokens_for, model_finetune="head", calibrate="bcts")
    assert cal.cached
    plain.train_experience(0)
    cal.train_experience(0)
    a, b = plain.model.state_dict(), cal.model.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == ["head.weight", "head.bias"]
    X, y = cal.val_data(0)
    assert X is cal.val_features[0]
    with torch.no_grad():
        mean_p = torch.softmax(cal.model.head(X), 1).mean(0)
    freq = torch.bincount(y, minlength=mean_p.numel()).float() / len(y)
    assert mean_p.tolist() == pytest.approx(freq.tolist(), abs=5e-3)


def test_periodic_strategy_is_calibrated_only_when_it_trains(make_scenario, tokens_for):
    cal = learner(make_scenario, tokens_for, ref={"preset": "periodic_refinetune", "period": 2}, calibrate="bias")
    for i in range(3):
        cal.train_experience(i)
    assert len(cal.plugin(CalibrationPlugin).offsets) == 1  # refit after experience 1 only
