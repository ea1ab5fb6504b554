"""Strategy presets: a conformance suite every preset passes, plus behaviour checks that
each strategy does what its name promises (replay buffer, EWC penalty, periodic reset,
cumulative union)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import resolve

from clsim import metrics as M
from clsim.config import ConfigError, StrategyRef, available_presets
from clsim.learner import Learner

CORE = ["naive", "cumulative", "replay", "ewc", "lwf", "periodic_refinetune"]
N_TRAIN = 48


def run(learner: Learner, T: int):
    z = learner.accuracy_row()
    R = []
    for i in range(T):
        learner.train_experience(i)
        R.append(learner.accuracy_row())
    return z, R


def central_presets() -> list[str]:
    from clsim.config.presets import load_preset_file
    from clsim.federated.schema import FEDERATED

    return [n for n, p in available_presets().items() if not load_preset_file(p, (FEDERATED,)).blocks]


def test_core_presets_are_shipped():
    assert set(CORE) <= set(available_presets())


@pytest.mark.parametrize("preset", central_presets())
def test_preset_conformance(preset, make_scenario, tokens_for):
    """Every central preset: runs the stream, gives a well-formed R, and is seed-deterministic."""
    sc = make_scenario()
    tokens = tokens_for(sc)
    spec = resolve(preset)
    z1, R1 = run(Learner(sc, spec, tokens), len(tokens))
    z2, R2 = run(Learner(sc, resolve(preset), tokens), len(tokens))
    R = np.asarray(R1)
    assert R.shape == (3, 3) and len(z1) == 3
    assert np.all((R >= 0) & (R <= 1))
    assert (R1, z1) == (R2, z2), "same scenario and seed must give the same accuracy matrix"
    assert set(M.summarize(R1, z1)) == set(M.NAMES)


def test_different_seeds_differ(make_scenario, tokens_for):
    spec = lambda: resolve("naive")  # noqa: E731
    a = run(Learner(make_scenario(seed=0), spec(), tokens_for(make_scenario(seed=0))), 3)
    b = run(Learner(make_scenario(seed=1), spec(), tokens_for(make_scenario(seed=1))), 3)
    assert a != b


def test_replay_buffer_holds_earlier_experiences(make_scenario, tokens_for):
    from avalanche.training.plugins import ReplayPlugin

    sc = make_scenario()
    tokens = tokens_for(sc)
    learner = Learner(sc, resolve({"preset": "replay", "mem_size": 40}), tokens)
    learner.train_experience(0)
    learner.train_experience(1)
    buffer = learner.plugin(ReplayPlugin).storage_policy.buffer
    exp0 = {tuple(x) for x in tokens.train[0].ids}
    exp1 = {tuple(x) for x in tokens.train[1].ids}
    held = [tuple(buffer[k][0]) for k in range(len(buffer))]
    assert len(held) == 40
    assert sum(h in exp0 for h in held) >= 10, "the buffer must still hold experience-0 samples"
    assert sum(h in exp1 for h in held) >= 10
    # replayed samples are trained on: each batch mixes buffer and current data
    assert learner.probe.samples[1] > N_TRAIN


def test_ewc_penalty_is_zero_then_nonzero(make_scenario, tokens_for):
    sc = make_scenario()
    learner = Learner(sc, resolve("ewc"), tokens_for(sc))
    run(learner, 3)
    ratio = learner.probe.reg_ratio
    assert ratio[0] == 0.0
    assert ratio[1] > 0.0 and ratio[2] > 0.0


def test_ewc_forgets_less_than_naive_on_concept_drift(make_scenario, tokens_for):
    """A stream built to forget: the same domain with its labels flipped. EWC anchors the
    weights important for experience 0, so its accuracy there drops far less."""
    sc = make_scenario(stream={"source": "synthetic", "experiences": ["food", {"domain": "food", "flip": True}],
                               "train_per_experience": 96, "test_per_experience": 48},
                       train={"epochs": 4, "batch_size": 16, "lr": 3.0e-3})
    tokens = tokens_for(sc)
    _, naive = run(Learner(sc, resolve("naive"), tokens), 2)
    _, ewc = run(Learner(sc, resolve({"preset": "ewc", "ewc_lambda": 1e5}), tokens), 2)
    assert naive[0][0] > 0.7, "the model must learn experience 0 for forgetting to mean anything"
    assert M.forgetting(naive) > 0.1
    assert M.forgetting(ewc) < M.forgetting(naive) - 0.1


def test_periodic_refinetune_resets_on_schedule_and_trains_on_window(make_scenario, tokens_for):
    from clsim.strategies.plugins import PeriodicRefinetunePlugin

    sc = make_scenario(stream={"source": "synthetic", "experiences": ["food", "tech", "travel", "movies", "sports"],
                               "train_per_experience": N_TRAIN, "test_per_experience": 16})
    tokens = tokens_for(sc)
    learner = Learner(sc, resolve(StrategyRef.model_validate({"preset": "periodic_refinetune", "period": 2,
                                                              "window": 2})), tokens)
    plugin = learner.plugin(PeriodicRefinetunePlugin)
    initial = {k: v.clone() for k, v in learner.model.state_dict().items()}
    seen_at_refit = {}

    def snapshot(strategy, **kw):
        k = strategy.clock.train_exp_counter
        seen_at_refit[k] = all(torch.equal(v, initial[n]) for n, v in strategy.model.state_dict().items())

    plugin_before = plugin.before_training_exp

    def spy(strategy, **kw):
        plugin_before(strategy, **kw)
        snapshot(strategy)

    plugin.before_training_exp = spy
    before = None
    for i in range(5):
        state = {k: v.clone() for k, v in learner.model.state_dict().items()}
        learner.train_experience(i)
        after = learner.model.state_dict()
        unchanged = all(torch.equal(after[k], state[k]) for k in state)
        assert unchanged == (i % 2 == 1), f"experience {i}: model must change only at refits"
        before = state
    assert before is not None
    assert plugin.refits == [0, 2, 4]
    assert [seen_at_refit[k] for k in (0, 2, 4)] == [True, True, True], "weights reset to pretrained at refits"
    # window of 2: refit at 0 sees 1 experience, refits at 2 and 4 see experiences {1,2} and {3,4}
    assert learner.probe.samples == [N_TRAIN, 0, 2 * N_TRAIN, 0, 2 * N_TRAIN]


def test_cumulative_trains_on_the_union(make_scenario, tokens_for):
    sc = make_scenario()
    learner = Learner(sc, resolve("cumulative"), tokens_for(sc))
    run(learner, 3)
    assert learner.probe.samples == [N_TRAIN, 2 * N_TRAIN, 3 * N_TRAIN]


def test_naive_trains_on_the_current_experience_only(make_scenario, tokens_for):
    sc = make_scenario()
    learner = Learner(sc, resolve("naive"), tokens_for(sc))
    run(learner, 3)
    assert learner.probe.samples == [N_TRAIN] * 3
    assert learner.trainable_params == sum(p.numel() for p in learner.model.parameters())


@pytest.mark.parametrize("finetune,extra", [("head", {}), ("partial", {"freeze_layers": 1}), ("lora", {})])
def test_finetune_modes_limit_trainable_parameters(finetune, extra, make_scenario, tokens_for):
    full = make_scenario()
    sc = make_scenario(model={"pretrained": "tiny", "finetune": finetune, "max_length": 32, **extra})
    n_full = Learner(full, resolve("naive"), tokens_for(full)).trainable_params
    learner = Learner(sc, resolve("naive"), tokens_for(sc))
    frozen = {n: p.clone() for n, p in learner.model.named_parameters() if not p.requires_grad}
    assert 0 < learner.trainable_params < n_full
    learner.train_experience(0)
    for n, p in learner.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n} is frozen in {finetune} mode but changed"


@pytest.mark.parametrize("ref,field,match", [
    ("nope", "strategies[0].preset", "unknown strategy"),
    ({"preset": "ewc", "ewc_lamda": 5}, "strategies[0].ewc_lamda", "unknown parameter"),
    ({"preset": "replay", "mem_size": -3}, "strategies[0].mem_size", "non-negative"),
    ({"preset": "periodic_refinetune", "period": 0}, "strategies[0].period", "greater than or equal to 1"),
    ({"preset": "ewc", "ewc_lambda": "lots"}, "strategies[0].ewc_lambda", "valid number"),
    ({"preset": "replay", "mem_size": 2.5}, "strategies[0].mem_size", "valid integer"),
    ({"preset": "periodic_refinetune", "window": 9}, "strategies[0].window", "longer than the stream"),
])
def test_bad_strategy_references(ref, field, match):
    with pytest.raises(ConfigError, match=match) as info:
        resolve(ref)
    assert info.value.field == field


def test_overrides_reach_the_component_that_takes_them():
    spec = resolve({"preset": "ewc", "name": "ewc_big", "ewc_lambda": 123.0})
    assert spec.name == "ewc_big"
    assert spec.plugins[0].params["ewc_lambda"] == 123.0
    assert spec.hparams()["EWCPlugin.ewc_lambda"] == 123.0
