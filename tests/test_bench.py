"""`clsim bench` in its tiny mode, and the two speed features it measures: bf16 autocast
(an Avalanche plugin + evaluation) and cached backbone features for `finetune: head`."""
from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from clsim.bench import GOALS
from clsim.cli import app


def _learner(make_scenario, tokens_for, preset="naive", **kw):
    from conftest import resolve

    from clsim.learner import Learner

    model = kw.pop("model", {"pretrained": "tiny", "finetune": "full", "max_length": 32})
    train = {"epochs": 1, "batch_size": 16, "lr": 1.0e-3, **kw.pop("train", {})}
    sc = make_scenario(model=model, train=train)
    return Learner(sc, resolve(preset, train=sc.train), tokens_for(sc), **kw)


def test_bench_tiny_reports_every_ratio(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--tiny", "--json", str(out)])
    assert res.exit_code == 0, res.output
    ratios = json.loads(out.read_text())
    assert set(ratios) == set(GOALS)
    for name, value in ratios.items():
        if name == "flower_overhead" and value is None:  # reported as missing until the federated path exists
            continue
        assert value is not None and math.isfinite(value), name
        assert name in res.output
    assert 0 < ratios["lora_vs_full_bytes"] < 1  # lora sends a fraction of the full model's bytes
    for name in ("avalanche_vs_plain_loop", "dynamic_vs_fixed_padding", "bf16_vs_fp32", "head_cached_vs_recompute"):
        assert ratios[name] > 0


# ------------------------------------------------------------------ bf16
class _Dtypes:
    """A plugin recording what the training loop sees under each precision."""

    def __init__(self):
        from avalanche.core import SupervisedPlugin

        rec = self

        class P(SupervisedPlugin):
            def after_forward(self, strategy, **kw):
                rec.logits.append(strategy.mb_output.dtype)

            def after_backward(self, strategy, **kw):
                rec.autocast_in_backward.append(torch.is_autocast_enabled("cpu"))
                rec.loss.append(strategy.loss.dtype)

        self.plugin = P()
        self.logits, self.loss, self.autocast_in_backward = [], [], []


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_wraps_forward_in_autocast_only(make_scenario, tokens_for, precision, dtype):
    learner = _learner(make_scenario, tokens_for, train={"precision": precision})
    rec = _Dtypes()
    learner.strategy.plugins.append(rec.plugin)
    learner.train_experience(0)
    assert rec.logits and set(rec.logits) == {dtype}
    assert set(rec.loss) == {torch.float32}  # the loss (cross-entropy) autocasts to fp32
    assert not any(rec.autocast_in_backward)  # backward + step outside autocast
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the experience
    assert all(p.dtype == torch.float32 for p in learner.model.parameters())  # fp32 master weights

    seen = []
    hook = learner.model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    row = learner.accuracy_row()
    hook.remove()
    assert set(seen) == {dtype} and all(0 <= a <= 1 for a in row)


# ------------------------------------------------------------------ cached features for `head`
HEAD = {"pretrained": "tiny", "finetune": "head", "max_length": 32}


def test_frozen_backbone_stays_in_eval_mode(make_scenario, tokens_for):
    from clsim.models import build_model

    head = build_model(make_scenario(model=HEAD).model, 3, 0).train()
    full = build_model(make_scenario().model, 3, 0).train()
    assert head.training and head.head.training and not head.backbone.training
    assert full.backbone.training


@pytest.mark.parametrize("preset", ["naive", "replay", "ewc"])
def test_cached_head_features_are_exactly_equivalent(make_scenario, tokens_for, preset):
    out = {}
    for cache in (True, False):
        learner = _learner(make_scenario, tokens_for, preset, model=HEAD, train={"epochs": 2}, cache_features=cache)
        assert learner.cached is cache
        calls = []
        learner.model.backbone.register_forward_hook(lambda *a: calls.append(1))
        rows = [learner.accuracy_row()]
        for i in range(len(learner.tokens)):
            learner.train_experience(i)
            rows.append(learner.accuracy_row())
        out[cache] = rows, learner.model.head.state_dict(), len(calls), learner.probe.samples
    (rows_c, head_c, calls_c, n_c), (rows_r, head_r, calls_r, n_r) = out[True], out[False]
    assert calls_c == 0 and calls_r > 0  # cached: the backbone never runs after the cache is built
    assert n_c == n_r  # same samples trained on (replay included)
    assert rows_c == rows_r
    for k in head_c:
        torch.testing.assert_close(head_c[k], head_r[k], atol=1e-5, rtol=1e-5)
    assert not torch.equal(head_c["weight"], _learner(make_scenario, tokens_for, preset, model=HEAD).model.head.weight)


def test_full_finetune_is_never_cached(make_scenario, tokens_for):
    assert _learner(make_scenario, tokens_for).cached is False


# ------------------------------------------------------------------ length-grouped batches
@pytest.mark.parametrize("preset", ["naive", "cumulative"])
def test_group_by_length_pads_less_and_trains_on_every_example_once(make_scenario, tokens_for, preset):
    from avalanche.core import SupervisedPlugin

    seen = {}
    for grouped in (False, True):
        widths, labels = [], []

        class Rec(SupervisedPlugin):
            def after_forward(self, strategy, **kw):
                widths.append(strategy.mb_x.shape[1])
                labels.extend(strategy.mb_y.tolist())

        learner = _learner(make_scenario, tokens_for, preset, train={"group_by_length": grouped, "batch_size": 4})
        learner.strategy.plugins.append(Rec())
        learner.train_experience(0)
        learner.train_experience(1)
        seen[grouped] = widths, labels
    tokens = learner.tokens
    expected = {"naive": [0, 1], "cumulative": [0, 0, 1]}[preset]  # cumulative: experience 1 trains on 0 + 1
    for grouped, (widths, labels) in seen.items():
        assert sorted(labels) == sorted(y for i in expected for y in tokens.train[i].labels.tolist())
    assert len(seen[True][0]) == len(seen[False][0])  # as many batches
    assert sum(seen[True][0]) < sum(seen[False][0])  # less padding


def test_bench_online_serving_cost_tiny():
    """The online protocol's serving cost: batched inference per arrival against an online step."""
    from clsim.bench import BenchConfig, measure_online_serving
    from clsim.data import build_stream
    from clsim.models import tokenize_stream

    cfg = BenchConfig(tiny=True)
    sc = cfg.scenario()
    said: list[str] = []
    r = measure_online_serving(cfg, tokenize_stream(build_stream(sc.stream, sc.seed), sc.model), said.append)
    assert r.name == "online_serve_vs_train" and r.value is not None and 0 < r.value < math.inf
    assert "ms per arrival" in r.detail and said
