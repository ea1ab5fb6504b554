"""Strategy presets: a conformance suite every preset passes, plus behaviour checks that
each strategy does what its name promises (replay buffer, EWC penalty, periodic reset,
cumulative union)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import resolve

from clsim import metrics as M
from clsim.config import ConfigError, available_presets
from clsim.learner import Learner

CORE = ["naive", "cumulative", "replay", "ewc", "lwf", "periodic_refinetune", "independent"]
N_TRAIN = 48


def spec_for(sc, ref, **kw):
    """The plan of strategy entry ``ref`` in scenario ``sc`` (trained as ``sc.train`` says)."""
    return resolve(ref, train=sc.train, experiences=sc.stream_length, **kw)


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
    spec = spec_for(sc, preset)
    z1, R1 = run(Learner(sc, spec, tokens), len(tokens))
    z2, R2 = run(Learner(sc, spec_for(sc, preset), tokens), len(tokens))
    R = np.asarray(R1)
    assert R.shape == (3, 3) and len(z1) == 3
    assert np.all((R >= 0) & (R <= 1))
    assert (R1, z1) == (R2, z2), "same scenario and seed must give the same accuracy matrix"
    assert set(M.summarize(R1, z1)) == set(M.NAMES)


def test_different_seeds_differ(make_scenario, tokens_for):
    a = run(Learner(make_scenario(seed=0), spec_for(make_scenario(), "naive"), tokens_for(make_scenario(seed=0))), 3)
    b = run(Learner(make_scenario(seed=1), spec_for(make_scenario(), "naive"), tokens_for(make_scenario(seed=1))), 3)
    assert a != b


def test_replay_buffer_holds_earlier_experiences(make_scenario, tokens_for):
    from avalanche.training.plugins import ReplayPlugin

    sc = make_scenario()
    tokens = tokens_for(sc)
    learner = Learner(sc, spec_for(sc, {"preset": "replay", "mem_size": 40}), tokens)
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
    learner = Learner(sc, spec_for(sc, "ewc"), tokens_for(sc))
    run(learner, 3)
    ratio = learner.probe.reg_ratio
    assert ratio[0] == 0.0
    assert ratio[1] > 0.0 and ratio[2] > 0.0


@pytest.mark.parametrize("mode", ["separate", "online"])
def test_ewc_anchors_only_trainable_parameters_and_trains_the_same(mode, make_scenario, tokens_for, monkeypatch):
    """With frozen layers, EWC's anchors hold only the parameters that train, and the weights it
    trains are bit for bit those of Avalanche's plugin keeping every parameter (the skipped terms
    are exact zeros). Control: the penalty acts (the weights differ from λ = 0's)."""
    from avalanche.training.plugins import EWCPlugin

    from clsim.strategies.plugins import FrozenAnchorsPlugin

    sc = make_scenario(model={"pretrained": "tiny", "finetune": "partial", "freeze_layers": 1, "max_length": 32})
    tokens = tokens_for(sc)
    extra = {} if mode == "separate" else {"decay_factor": 0.5}

    def trained(lam: float) -> tuple[dict, EWCPlugin]:
        learner = Learner(sc, spec_for(sc, {"preset": "ewc", "ewc_lambda": lam, "mode": mode, **extra}), tokens)
        run(learner, 3)
        return {k: v.clone() for k, v in learner.model.state_dict().items()}, learner.plugin(EWCPlugin)

    trimmed, ewc = trained(1e4)
    params = dict(Learner(sc, spec_for(sc, "naive"), tokens).model.named_parameters())
    trainable = {k for k, p in params.items() if p.requires_grad}
    assert 0 < len(trainable) < len(params)
    assert all(set(anchor) == trainable for anchor in ewc.saved_params.values())
    monkeypatch.setattr(FrozenAnchorsPlugin, "after_training_exp", lambda self, strategy, **kw: None)
    full, ewc_full = trained(1e4)
    assert any(len(anchor) > len(trainable) for anchor in ewc_full.saved_params.values())
    assert all(torch.equal(trimmed[k], full[k]) for k in full)
    unpenalised, _ = trained(0.0)
    assert not all(torch.equal(trimmed[k], unpenalised[k]) for k in full)


def test_ewc_forgets_less_than_naive_on_concept_drift(make_scenario, tokens_for):
    """A stream built to forget: the same domain with its labels flipped. EWC anchors the
    weights important for experience 0, so its accuracy there drops far less. Without the linear
    probe: the probe refits the head on the flipped labels with no penalty (EWC acts during
    fine-tuning only), and on this stream the head alone can learn the flip."""
    sc = make_scenario(stream={"source": "synthetic", "experiences": ["food", {"domain": "food", "flip": True}],
                               "train_per_experience": 96, "test_per_experience": 48},
                       train={"epochs": 8, "batch_size": 16, "lr": 3.0e-3, "lp_epochs": 0})
    tokens = tokens_for(sc)
    _, naive = run(Learner(sc, spec_for(sc, "naive"), tokens), 2)
    _, ewc = run(Learner(sc, spec_for(sc, {"preset": "ewc", "ewc_lambda": 1e5}), tokens), 2)
    assert naive[0][0] > 0.7, "the model must learn experience 0 for forgetting to mean anything"
    assert M.forgetting(naive) > 0.1
    assert M.forgetting(ewc) < M.forgetting(naive) - 0.1


def test_periodic_refit_schedule_is_the_end_of_each_window():
    """Refits after experiences period−1, 2·period−1, … (hand-listed for T = 5)."""
    from clsim.strategies.plugins.periodic_refinetune import refit_experiences

    assert refit_experiences(1, 5) == [0, 1, 2, 3, 4]
    assert refit_experiences(2, 5) == [1, 3]
    assert refit_experiences(3, 5) == [2]
    assert refit_experiences(5, 5) == [4]


FIVE = {"source": "synthetic", "experiences": ["food", "tech", "travel", "movies", "sports"],
        "train_per_experience": N_TRAIN, "test_per_experience": 16}


def _periodic_run(sc, tokens, **params):
    """Train a periodic learner over the stream; per experience: did the model change, and did the
    weights at the start of its training (after the plugin's reset, before the probe) equal the
    pretrained ones / the ones in service."""
    from clsim.strategies.plugins import PeriodicRefinetunePlugin

    learner = Learner(sc, spec_for(sc, {"preset": "periodic_refinetune", **params}), tokens)
    plugin = learner.plugin(PeriodicRefinetunePlugin)
    initial = {k: v.clone() for k, v in learner.model.state_dict().items()}
    at_start = {}
    plugin_before = plugin.before_training_exp

    def spy(strategy, **kw):
        served = {k: v.clone() for k, v in strategy.model.state_dict().items()}
        plugin_before(strategy, **kw)
        now = strategy.model.state_dict()
        at_start[strategy.clock.train_exp_counter] = (all(torch.equal(now[k], initial[k]) for k in now),
                                                      all(torch.equal(now[k], served[k]) for k in now))

    plugin.before_training_exp = spy
    changed = []
    for i in range(len(tokens)):
        before = {k: v.clone() for k, v in learner.model.state_dict().items()}
        learner.train_experience(i)
        changed.append(not all(torch.equal(learner.model.state_dict()[k], before[k]) for k in before))
    return learner, plugin, changed, at_start


@pytest.mark.parametrize("period, window, refits", [(2, 2, [1, 3]), (3, 3, [2])])
def test_periodic_refinetune_refits_at_window_ends_on_the_window(period, window, refits, make_scenario, tokens_for):
    sc = make_scenario(stream=FIVE)
    learner, plugin, changed, at_start = _periodic_run(sc, tokens_for(sc), period=period, window=window)
    assert plugin.refits == refits
    assert changed == [k in refits for k in range(5)], "the model changes only at refits"
    assert all(at_start[k][0] for k in refits), "start: pretrained resets to the pretrained weights"
    # each refit trains on the union of the last `window` experiences, the others train nothing
    assert learner.probe.samples == [window * N_TRAIN if k in refits else 0 for k in range(5)]


def test_periodic_refinetune_can_start_from_the_model_in_service(make_scenario, tokens_for):
    sc = make_scenario(stream=FIVE)
    learner, plugin, changed, at_start = _periodic_run(sc, tokens_for(sc), period=2, window=2, start="current")
    assert plugin.refits == [1, 3] and plugin.initial_state is None
    assert at_start[1] == (True, True), "the first refit starts from the pretrained model: it is the one in service"
    assert at_start[3] == (False, True), "the second continues from the model refit at experience 1"


def test_cumulative_trains_on_the_union(make_scenario, tokens_for):
    sc = make_scenario()
    learner = Learner(sc, spec_for(sc, "cumulative"), tokens_for(sc))
    run(learner, 3)
    assert learner.probe.samples == [N_TRAIN, 2 * N_TRAIN, 3 * N_TRAIN]


def test_naive_trains_on_the_current_experience_only(make_scenario, tokens_for):
    sc = make_scenario()
    learner = Learner(sc, spec_for(sc, "naive"), tokens_for(sc))
    run(learner, 3)
    assert learner.probe.samples == [N_TRAIN] * 3
    assert learner.trainable_params == sum(p.numel() for p in learner.model.parameters())


@pytest.mark.parametrize("finetune,extra", [("head", {}), ("partial", {"freeze_layers": 1}), ("lora", {})])
def test_finetune_modes_limit_trainable_parameters(finetune, extra, make_scenario, tokens_for):
    full = make_scenario()
    sc = make_scenario(model={"pretrained": "tiny", "finetune": finetune, "max_length": 32, **extra})
    n_full = Learner(full, spec_for(full, "naive"), tokens_for(full)).trainable_params
    learner = Learner(sc, spec_for(sc, "naive"), tokens_for(sc))
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
# --------------------------------------------------------------------------- LwF's teacher
def test_lwf_teacher_is_in_eval_mode_and_deterministic(make_scenario, tokens_for):
    """The teacher distils the same soft targets every time: eval mode, dropout off. Control:
    Avalanche's own LwFPlugin keeps a train-mode copy whose outputs vary (the tiny BERT has dropout)."""
    from avalanche.training.plugins import LwFPlugin

    from clsim.models import PadCollate
    from clsim.strategies.plugins import EvalTeacherLwFPlugin

    sc = make_scenario()
    tokens = tokens_for(sc)
    learner = Learner(sc, spec_for(sc, "lwf"), tokens)
    learner.train_experience(0)
    teacher = learner.plugin(EvalTeacherLwFPlugin).lwf.prev_model
    assert teacher is not None and not teacher.training
    assert not any(m.training for m in teacher.modules())
    x, _, _ = PadCollate(tokens.pad_id)([(ids, 0, 0) for ids in tokens.train[1].ids[:16]])
    with torch.no_grad():
        assert torch.equal(teacher(x), teacher(x))

    plain = LwFPlugin()
    learner.model.train()
    plain.lwf.prev_model = __import__("copy").deepcopy(learner.model)  # what LwFPlugin.post_adapt keeps
    with torch.no_grad():
        assert plain.lwf.prev_model.training and not torch.equal(plain.lwf.prev_model(x), plain.lwf.prev_model(x))


# --------------------------------------------------------------------------- replay storage
def test_replay_class_balanced_storage(make_scenario, tokens_for):
    """storage: class — Avalanche's ClassBalancedBuffer: the memory split equally over classes."""
    from avalanche.training.storage_policy import ClassBalancedBuffer, ExperienceBalancedBuffer

    from clsim.strategies.plugins import BalancedReplayPlugin

    sc = make_scenario(stream={"source": "synthetic", "experiences": ["food", {"domain": "tech",
                               "label_prior": [0.8, 0.1, 0.1]}], "train_per_experience": N_TRAIN,
                               "test_per_experience": 16})
    tokens = tokens_for(sc)
    default = Learner(sc, spec_for(sc, "replay"), tokens).plugin(BalancedReplayPlugin)
    assert type(default.storage_policy) is ExperienceBalancedBuffer
    learner = Learner(sc, spec_for(sc, {"preset": "replay", "mem_size": 30, "storage": "class"}), tokens)
    sp = learner.plugin(BalancedReplayPlugin).storage_policy
    assert type(sp) is ClassBalancedBuffer and sp.max_size == 30
    learner.train_experience(0)
    learner.train_experience(1)
    assert sorted(sp.buffer_groups) == [0, 1, 2]
    assert [len(sp.buffer_groups[c].buffer) for c in range(3)] == [10, 10, 10]
    for c in range(3):
        assert set(sp.buffer_groups[c].buffer.targets) == {c}


def test_replay_storage_is_checked():
    with pytest.raises(ConfigError, match="storage") as info:
        resolve({"preset": "replay", "storage": "topic"})
    assert info.value.field == "strategies[0].storage"


# --------------------------------------------------------------------------- independent
def test_independent_trains_each_experience_from_the_pretrained_model(make_scenario, tokens_for):
    """FromScratchTrainingPlugin: before every experience the initial weights are back and the
    optimizer state is empty; then the probe and fine-tuning run as for naive."""
    from avalanche.training.plugins import FromScratchTrainingPlugin

    from clsim.strategies.plugins import LinearProbePlugin

    sc = make_scenario()
    tokens = tokens_for(sc)
    learner = Learner(sc, spec_for(sc, "independent"), tokens)
    initial = {k: v.clone() for k, v in learner.model.state_dict().items()}
    seen = []
    lp = learner.plugin(LinearProbePlugin)
    fit = lp.fit

    def spy(head, X, y):  # the probe starts from the reset weights, with the optimizer reset
        now = learner.model.state_dict()
        seen.append((all(torch.equal(now[k], initial[k]) for k in now), len(learner.strategy.optimizer.state)))
        fit(head, X, y)

    lp.fit = spy
    z, R = run(learner, 3)
    assert learner.plugin(FromScratchTrainingPlugin) is not None
    assert seen == [(True, 0)] * 3
    assert learner.probe.samples == [N_TRAIN] * 3
    # experience 0 alone gives the same model as naive's first experience
    naive = Learner(sc, spec_for(sc, "naive"), tokens)
    naive.train_experience(0)
    assert naive.accuracy_row() == R[0]
