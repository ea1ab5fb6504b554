"""Evaluation keeps the frozen bottom's output on the test sets (``finetune: partial``): the same
numbers as a full forward pass, without running the frozen layers again, and recomputed when
those weights change."""
from __future__ import annotations

import numpy as np
import torch
from conftest import resolve

from clsim.config import ModelConfig
from clsim.evaluation import confusion_row
from clsim.learner import Learner
from clsim.models import BottomCache, TokenizedSplit, build_model, pooled_features


def _texts(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1000, 5000, size=rng.integers(3, 30)).astype(np.int32) for _ in range(n)]


def _calls(module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_kept_bottom_gives_the_same_features_without_the_frozen_layers():
    model = build_model(ModelConfig(pretrained="tiny", finetune="partial", freeze_layers=1), 3, seed=0)
    assert model.frozen_bottom == 1
    ids, cache = _texts(), BottomCache()
    want = pooled_features(model, ids, 16, "cpu")
    frozen, trained = _calls(model.backbone.encoder.layer[0]), _calls(model.backbone.encoder.layer[1])
    assert cache.prepare(model, 16, "fp32")
    first = pooled_features(model, ids, 16, "cpu", kept=cache.kept(0))
    n_frozen, n_trained = len(frozen), len(trained)
    assert cache.prepare(model, 16, "fp32")
    again = pooled_features(model, ids, 16, "cpu", kept=cache.kept(0))
    assert torch.equal(first, want) and torch.equal(again, want)  # bit for bit: the same operations
    assert n_frozen == n_trained == 3  # 40 texts in batches of 16
    assert len(frozen) == n_frozen and len(trained) == 2 * n_trained, "the frozen layer ran again"


def test_kept_bottom_is_recomputed_when_the_frozen_weights_change():
    model = build_model(ModelConfig(pretrained="tiny", finetune="partial", freeze_layers=1), 3, seed=0)
    ids, cache = _texts(), BottomCache()
    assert cache.prepare(model, 16, "fp32")
    pooled_features(model, ids, 16, "cpu", kept=cache.kept(0))
    with torch.no_grad():
        model.backbone.embeddings.word_embeddings.weight.mul_(1.5)  # e.g. federated arrays loaded over it
    assert cache.prepare(model, 16, "fp32") and cache.kept(0) == []  # what was kept for the old weights is gone
    assert torch.equal(pooled_features(model, ids, 16, "cpu", kept=cache.kept(0)), pooled_features(model, ids, 16,
                                                                                                    "cpu"))


def test_models_without_a_frozen_bottom_evaluate_as_before():
    for finetune in ("full", "lora"):
        model = build_model(ModelConfig(pretrained="tiny", finetune=finetune), 3, seed=0)
        assert model.frozen_bottom == 0
        cache = BottomCache()
        assert not cache.prepare(model, 16, "fp32")
        tests = [TokenizedSplit(_texts(), np.arange(40) % 3)]
        with_cache = confusion_row(model, tests, 3, 16, "cpu", cache=cache)
        assert all(np.array_equal(a, b) for a, b in zip(with_cache, confusion_row(model, tests, 3, 16, "cpu")))
        assert cache.key is None


def test_learner_evaluates_a_partially_frozen_model_as_a_full_forward_would(make_scenario, tokens_for):
    sc = make_scenario(model={"pretrained": "tiny", "finetune": "partial", "freeze_layers": 1, "max_length": 32})
    tokens = tokens_for(sc)
    learner = Learner(sc, resolve("naive", train=sc.train, experiences=sc.stream_length), tokens)
    n = len(tokens.label_names)
    for i in range(2):
        learner.train_experience(i)
        row = learner.evaluate()
        want = confusion_row(learner.model, tokens.test, n, sc.train.eval_batch_size, "cpu")
        assert all(np.array_equal(a, b) for a, b in zip(row, want))
    assert learner._bottom.key is not None and len(learner._bottom.sets) == len(tokens.test)
