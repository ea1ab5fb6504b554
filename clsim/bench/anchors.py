"""The bench's EWC measure: EWC over a six-topic stream with its anchors on every parameter
(Avalanche's ``EWCPlugin`` alone) vs on the parameters that train (``FrozenAnchorsPlugin``, what
clsim does), with the embeddings and lowest two layers frozen as in drift_sentiment."""
from __future__ import annotations

import time

import torch

from clsim.bench.core import BenchConfig, Result
from clsim.config import Scenario, resolve_scenario
from clsim.data import build_stream
from clsim.learner import Learner
from clsim.models import tokenize_stream
from clsim.strategies.plugins import FrozenAnchorsPlugin

TOPICS = ["airline", "cars", "apple", "coachella", "deflategate", "claritin"]  # drift_sentiment's


def scenario(cfg: BenchConfig) -> Scenario:
    """drift_sentiment's six topics, model and recipe, with fewer tweets: a step's penalty costs the
    same whatever the experience's size (tiny: three synthetic topics, one frozen layer)."""
    if cfg.tiny:
        stream = {"source": "synthetic", "experiences": ["food", "tech", "travel"],
                  "train_per_experience": 32, "test_per_experience": 16}
        model = {"pretrained": "tiny", "finetune": "partial", "freeze_layers": 1, "max_length": 32}
    else:
        stream = {"source": "tweets", "experiences": TOPICS, "train_per_experience": 96, "test_per_experience": 16}
        model = {"pretrained": "minilm", "finetune": "partial", "freeze_layers": 2, "max_length": 48}
    return Scenario.model_validate({"name": "bench_ewc", "seed": 0, "stream": stream, "model": model,
                                    "train": {"epochs": 2, "batch_size": 16, "lr": 5e-5, "group_by_length": True},
                                    "strategies": ["ewc"]})


def _ewc_learner(sc: Scenario, tokens, all_parameters: bool) -> Learner:
    learner = Learner(sc, resolve_scenario(sc).strategies[0], tokens)
    if all_parameters:  # Avalanche's plugin as it comes: every parameter anchored
        learner.strategy.plugins.remove(learner.plugin(FrozenAnchorsPlugin))
    return learner


def measure_ewc_anchors(cfg: BenchConfig, say) -> Result:
    """EWC's training time over the stream (the penalty is all that differs), anchors on every
    parameter vs on the trainable ones; the two learners alternate per experience, the best of
    ``repeats`` passes counts."""
    sc = scenario(cfg)
    tokens = tokenize_stream(build_stream(sc.stream, sc.seed), sc.model)
    best: dict[str, float] = {}
    for r in range(cfg.repeats):
        say(f"EWC over {len(tokens)} topics, anchors on every parameter vs the trainable ones, "
            f"pass {r + 1} of {cfg.repeats}")
        learners = {"all": _ewc_learner(sc, tokens, True), "trainable": _ewc_learner(sc, tokens, False)}
        seconds = dict.fromkeys(learners, 0.0)
        for i in range(len(tokens)):
            for name, learner in learners.items():
                t0 = time.perf_counter()
                learner.train_experience(i)
                seconds[name] += time.perf_counter() - t0
        best = {k: min(v, best.get(k, float("inf"))) for k, v in seconds.items()}
    same = all(torch.equal(a, b) for a, b in zip(learners["all"].model.state_dict().values(),
                                                 learners["trainable"].model.state_dict().values()))
    return Result("ewc_trainable_vs_all_anchors", best["all"] / best["trainable"],
                  f"all {best['all']:.1f} s, trainable {best['trainable']:.1f} s of training over {len(tokens)} "
                  f"topics; " + ("same trained weights" if same else "DIFFERENT trained weights"))
