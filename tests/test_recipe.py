"""The training recipe (``TrainConfig``): linear probe then fine-tuning under warmup + decay, and
per-strategy training overrides. Values are hand-computed from the step counts."""
from __future__ import annotations

import pytest
import torch
import yaml
from conftest import plan_of, resolve, scenario_dict
from typer.testing import CliRunner

from clsim.config import ConfigError, Scenario, TrainConfig
from clsim.learner import Learner

N_TRAIN = 48  # the conftest scenario's experiences: 48 samples, batch 16 -> 3 steps per epoch


def learner_for(sc, ref="naive", tokens_for=None):
    return Learner(sc, resolve(ref, train=sc.train, experiences=sc.stream_length), tokens_for(sc))


class LrRecorder:
    """A plugin that records the learning rate each optimizer step uses."""

    def __init__(self):
        from avalanche.core import SupervisedPlugin

        rec = self
        self.lrs: list[list[float]] = []

        class P(SupervisedPlugin):
            def before_training_exp(self, strategy, **kw):
                rec.lrs.append([])

            def before_update(self, strategy, **kw):
                rec.lrs[-1].append(strategy.optimizer.param_groups[0]["lr"])

            def after_training_exp(self, strategy, **kw):
                rec.after = strategy.optimizer.param_groups[0]["lr"]

        self.plugin = P()


def test_defaults_are_lp_ft():
    t = TrainConfig()
    assert (t.epochs, t.lr, t.weight_decay, t.warmup, t.schedule, t.lp_epochs, t.lp_lr) == \
        (1, 5e-5, 0.01, 0.1, "linear", 20, 1e-2)


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_warmup_then_decay_restarts_every_experience(schedule, make_scenario, tokens_for):
    """4 epochs × 3 batches = 12 steps; warmup 0.25 -> ceil(3) = 3 steps from 0: lr·0, lr/3, 2lr/3.
    linear: then lr·(12 − s)/9 for step s = 3 … 11 (lr at 3, lr/9 at the last step); constant: lr.
    The base rate is back after the experience, and the next experience warms up again."""
    base = 1e-3
    sc = make_scenario(train={"epochs": 4, "batch_size": 16, "lr": base, "warmup": 0.25, "schedule": schedule,
                              "lp_epochs": 0})
    learner = learner_for(sc, tokens_for=tokens_for)
    rec = LrRecorder()
    learner.strategy.plugins.append(rec.plugin)
    learner.train_experience(0)
    assert rec.after == base
    learner.train_experience(1)
    warm = [0.0, base / 3, 2 * base / 3]
    rest = [base * (12 - s) / 9 for s in range(3, 12)] if schedule == "linear" else [base] * 9
    for lrs in rec.lrs:
        assert lrs == pytest.approx(warm + rest, rel=1e-6, abs=1e-12)
    if schedule == "linear":
        assert rec.lrs[0][3] == pytest.approx(base) and rec.lrs[0][-1] == pytest.approx(base / 9)


def test_no_warmup_constant_is_a_fixed_learning_rate(make_scenario, tokens_for):
    sc = make_scenario(train={"epochs": 1, "batch_size": 16, "lr": 1e-3, "warmup": 0, "schedule": "constant",
                              "lp_epochs": 0})
    learner = learner_for(sc, tokens_for=tokens_for)
    rec = LrRecorder()
    learner.strategy.plugins.append(rec.plugin)
    learner.train_experience(0)
    assert rec.lrs == [[1e-3] * 3]


def test_periodic_serving_experience_gets_no_schedule(make_scenario, tokens_for):
    sc = make_scenario(train={"epochs": 1, "batch_size": 16, "lr": 1e-3, "lp_epochs": 0})
    learner = learner_for(sc, {"preset": "periodic_refinetune", "period": 2, "window": 2}, tokens_for)
    rec = LrRecorder()
    learner.strategy.plugins.append(rec.plugin)
    learner.train_experience(0)  # served: no step
    learner.train_experience(1)  # refit on 2 experiences: 6 steps, warmup ceil(0.6) = 1
    assert rec.lrs[0] == []
    assert rec.lrs[1] == pytest.approx([0.0] + [1e-3 * (6 - s) / 5 for s in range(1, 6)])


# --------------------------------------------------------------------------- linear probe
def test_probe_trains_the_head_alone_before_fine_tuning(make_scenario, tokens_for):
    """Order of events in an experience: the probe (head changes, backbone does not), then the
    first fine-tuning step. The probe's features are the eval-mode pooled features, and its time
    is inside the cost probe's train_seconds."""
    from avalanche.core import SupervisedPlugin

    from clsim.models import pooled_features
    from clsim.strategies.plugins import LinearProbePlugin

    sc = make_scenario(train={"epochs": 1, "batch_size": 16, "lr": 1e-3, "lp_epochs": 5})
    tokens = tokens_for(sc)
    learner = learner_for(sc, tokens_for=tokens_for)
    lp = learner.plugin(LinearProbePlugin)
    events, fit, features = [], lp.fit, lp.features

    def snapshot(part):
        return {k: v.clone() for k, v in getattr(learner.model, part).state_dict().items()}

    def spy_fit(head, X, y):
        b, h = snapshot("backbone"), snapshot("head")
        fit(head, X, y)
        events.append(("probe", all(torch.equal(v, b[k]) for k, v in snapshot("backbone").items()),
                       any(not torch.equal(v, h[k]) for k, v in snapshot("head").items())))

    def spy_features(strategy):
        X, y = features(strategy)
        events.append(("features", X.shape, strategy.model.training))
        return X, y

    class FirstStep(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kw):
            if strategy.clock.train_exp_iterations == 0:
                events.append(("fine-tune",))

    lp.fit, lp.features = spy_fit, spy_features
    learner.strategy.plugins.append(FirstStep())
    learner.train_experience(0)
    assert [e[0] for e in events] == ["features", "probe", "fine-tune"]
    assert events[0][1] == (N_TRAIN, learner.model.head.in_features)
    assert events[1][1:] == (True, True), "the probe changes the head and leaves the backbone alone"
    assert len(lp.seconds) == 1 and lp.seconds[0] <= learner.probe.train_seconds[0]
    # the cached features are the eval-mode pooled features of the experience's texts (any order)
    X, _ = features(_StrategyView(learner, 1))
    want = pooled_features(learner.model, tokens.train[1].ids, 64, "cpu")
    assert torch.allclose(X.sum(0), want.sum(0), atol=1e-4)


class _StrategyView:
    """What LinearProbePlugin.features reads of a strategy, for experience ``i``."""

    def __init__(self, learner, i):
        self.model, self.device, self.eval_mb_size = learner.model, "cpu", 64
        self.adapted_dataset = learner.benchmark.train_stream[i].dataset


def test_no_probe_for_a_frozen_backbone_or_zero_epochs(make_scenario, tokens_for):
    from clsim.strategies.plugins import LinearProbePlugin, WarmupSchedulePlugin

    head = make_scenario(model={"pretrained": "tiny", "finetune": "head", "max_length": 32})
    assert learner_for(head, tokens_for=tokens_for).plugin(LinearProbePlugin) is None
    off = make_scenario(train={"epochs": 1, "batch_size": 16, "lr": 1e-3, "lp_epochs": 0})
    learner = learner_for(off, tokens_for=tokens_for)
    assert learner.plugin(LinearProbePlugin) is None and learner.plugin(WarmupSchedulePlugin) is not None
    lora = make_scenario(model={"pretrained": "tiny", "finetune": "lora", "max_length": 32})
    assert learner_for(lora, tokens_for=tokens_for).plugin(LinearProbePlugin) is not None


def test_probe_skips_experiences_a_periodic_strategy_serves(make_scenario, tokens_for):
    from clsim.strategies.plugins import LinearProbePlugin

    sc = make_scenario()
    learner = learner_for(sc, {"preset": "periodic_refinetune", "period": 2, "window": 2}, tokens_for)
    for i in range(3):
        learner.train_experience(i)
    assert len(learner.plugin(LinearProbePlugin).seconds) == 1  # refit at experience 1 only


def test_the_probe_makes_the_head_fit_before_fine_tuning(make_scenario, tokens_for):
    """Fine-tuning at a learning rate too small to move anything (1e-6): its mean loss over the
    first experience is lower after the probe than from the random head."""
    losses = {}
    for lp in (0, 20):
        sc = make_scenario(train={"epochs": 1, "batch_size": 16, "lr": 1e-6, "lp_epochs": lp})
        learner = learner_for(sc, tokens_for=tokens_for)
        learner.train_experience(0)
        losses[lp] = learner.probe.loss[0]
    assert losses[20] < losses[0]


# --------------------------------------------------------------------------- per-strategy overrides
def test_strategy_train_overrides_update_the_scenarios(make_scenario, tokens_for):
    from clsim.lifecycle import hparams

    sc = make_scenario(strategies=["naive", {"preset": "naive", "name": "naive_2ep", "train": {"epochs": 2}}])
    plan = plan_of(sc)
    naive, twice = plan.strategies
    assert naive.train == sc.train
    assert twice.train == sc.train.model_copy(update={"epochs": 2})
    assert hparams(plan, twice)["epochs"] == 2 and hparams(plan, naive)["epochs"] == 1
    assert {"weight_decay", "warmup", "schedule", "lp_epochs", "lp_lr"} <= set(hparams(plan, twice))
    learner = Learner(sc, twice, tokens_for(sc))
    learner.train_experience(0)
    assert learner.probe.samples == [2 * N_TRAIN] and learner.strategy.train_epochs == 2


@pytest.mark.parametrize("train, field, match", [
    ({"epochz": 2}, "strategies[1].train.epochz", "unknown key"),
    ({"lr": -1}, "strategies[1].train.lr", "greater than 0"),
    ({"schedule": "cosine"}, "strategies[1].train.schedule", "expected one of"),
])
def test_bad_strategy_train_override(train, field, match, make_scenario):
    sc = make_scenario(strategies=["naive", {"preset": "ewc", "train": train}])
    with pytest.raises(ConfigError, match=match) as info:
        plan_of(sc)
    assert info.value.field == field


def test_bad_strategy_train_override_exits_2(tmp_path):
    from clsim.cli import app

    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(scenario_dict(strategies=[{"preset": "naive", "train": {"epochz": 2}}])))
    Scenario.model_validate(yaml.safe_load(file.read_text()))  # the scenario schema itself accepts it
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 2, result.output
    assert "strategies[0].train.epochz: unknown key" in result.output


def test_strategy_train_survives_plan_json_and_is_described(make_scenario):
    """A run folder's plan.json carries each strategy's training options; `clsim validate` shows
    the overridden ones."""
    from clsim.config import Plan, describe
    from clsim.federated.schema import FEDERATED

    sc = make_scenario(strategies=["naive", {"preset": "replay", "train": {"epochs": 2, "lp_epochs": 0}}])
    plan = plan_of(sc)
    again = Plan.from_json(plan.to_json(), (FEDERATED,))
    assert [s.train for s in again.strategies] == [s.train for s in plan.strategies]
    assert again.scenario.strategies[1].train == {"epochs": 2, "lp_epochs": 0}
    lines = dict(describe(plan))
    assert "train" not in lines["naive"]
    assert lines["replay"].endswith("; train epochs=2, lp_epochs=0")
