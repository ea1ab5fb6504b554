"""`clsim bench` in its tiny mode, and the two speed features it measures: bf16 autocast
(an Avalanche plugin + evaluation) and cached backbone features for `finetune: head`."""
from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from clsim.bench import BF16, GOALS
from clsim.cli import app


def _learner(make_scenario, tokens_for, preset="naive", **kw):
    from conftest import resolve

    from clsim.learner import Learner

    model = kw.pop("model", {"pretrained": "tiny", "finetune": "full", "max_length": 32})
    train = {"epochs": 1, "batch_size": 16, "lr": 1.0e-3, **kw.pop("train", {})}
    sc = make_scenario(model=model, train=train)
    return Learner(sc, resolve(preset, train=sc.train), tokens_for(sc), **kw)


def test_bench_tiny_reports_every_ratio(tmp_path):
    """Every measure but the three-simulation flower_scale (its own test): bf16 ones measured, or
    skipped with the reason where this CPU has no native bf16."""
    from clsim.precision import native_bf16

    out = tmp_path / "bench.json"
    names = [n for n in GOALS if not n.startswith("flower_scale")]
    native, _ = native_bf16("cpu")
    res = CliRunner().invoke(app, ["bench", "--tiny", "--json", str(out),
                                   "--only", ",".join(n for n in names if native or n not in BF16)])
    assert res.exit_code == 0, res.output
    ratios = json.loads(out.read_text())
    assert set(ratios) == set(names) - (set() if native else set(BF16))
    for name, value in ratios.items():
        assert value is not None and math.isfinite(value), name
        assert name in res.output
    assert 0 < ratios["lora_vs_full_bytes"] < 1  # lora sends a fraction of the full model's bytes
    assert "same confusion matrices" in res.output  # keeping the frozen bottom changes no number
    assert "same trained weights" in res.output  # anchoring EWC at trainable parameters only: none either
    for name in ("avalanche_vs_plain_loop", "dynamic_vs_fixed_padding", "head_cached_vs_recompute",
                 "eval_kept_bottom_vs_full"):
        assert ratios[name] > 0


def _stub_measures(monkeypatch, calls: list):
    """The bench's measures replaced by stubs that record their order (the orchestration under test)."""
    import clsim.bench as B
    from clsim.bench import GROUPS, Result

    def stub(group):
        def measure(*args, **kwargs):
            calls.append(group)
            wanted = next((a for a in args if isinstance(a, set)), set(GROUPS[group]))
            return [Result(n, 1.0, "stub") for n in GROUPS[group] if n in wanted]
        return measure

    monkeypatch.setattr(B, "measure_loops", stub("loops"))
    monkeypatch.setattr(B, "measure_bf16_accuracy", lambda *a: stub("bf16_accuracy")()[0])
    monkeypatch.setattr(B, "measure_head_cache", lambda *a: stub("head_cache")()[0])
    monkeypatch.setattr(B, "measure_bottom_cache", lambda *a: stub("bottom_cache")()[0])
    monkeypatch.setattr(B, "measure_ewc_anchors", lambda *a: stub("ewc_anchors")()[0])
    monkeypatch.setattr(B, "measure_flower", lambda *a: stub("flower")()[0])
    monkeypatch.setattr(B, "measure_lora_bytes", lambda *a: stub("lora_bytes")()[0])
    monkeypatch.setattr(B, "measure_flower_scale", lambda *a: stub("flower_scale")())


@pytest.mark.parametrize("native", [True, False])
def test_bench_skips_bf16_without_native_bf16_unless_asked_by_name(monkeypatch, native):
    import clsim.bench as B

    calls, seen = [], []
    _stub_measures(monkeypatch, calls)
    monkeypatch.setattr(B, "native_bf16", lambda device_type="cpu": (native, "CPU without native bf16 (test)"))
    results = B.run(B.BenchConfig(tiny=True), on_result=seen.append)
    assert [r.name for r in results] == list(GOALS)  # every measure, in the table's order
    skipped = {r.name: r.detail for r in results if r.value is None}
    if native:
        assert not skipped
    else:
        assert set(skipped) == set(BF16) and "bf16_accuracy" not in calls
        assert all(d.startswith("skipped: CPU without native bf16 (test)") and "--only" in d for d in skipped.values())
        assert [r.name for r in seen[:2]] == list(BF16)  # reported first, before any measure runs
    calls.clear()
    named = B.run(B.BenchConfig(tiny=True), only=["bf16_acc_drop_points"])  # asked by name: measured anyway
    assert [(r.name, r.value) for r in named] == [("bf16_acc_drop_points", 1.0)] and calls == ["bf16_accuracy"]


def test_bench_prints_each_measure_when_known_and_writes_json_after_each(monkeypatch, tmp_path):
    """A bench stopped half-way (here: the second measure fails) has printed and saved the first."""
    import clsim.bench as B

    _stub_measures(monkeypatch, [])

    def broken(*a):
        raise RuntimeError("stopped here")

    monkeypatch.setattr(B, "measure_lora_bytes", broken)
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--tiny", "--json", str(out), "--only",
                                   "avalanche_vs_plain_loop,lora_vs_full_bytes"])
    assert isinstance(res.exception, RuntimeError)
    assert "avalanche_vs_plain_loop 1.00× (goal >= 0.95: yes) stub" in " ".join(res.output.split())
    assert json.loads(out.read_text()) == {"avalanche_vs_plain_loop": 1.0}


def test_bench_only_refuses_an_unknown_measure():
    res = CliRunner().invoke(app, ["bench", "--tiny", "--only", "flower_overhead,warp_speed"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "--only" in res.output and "'warp_speed'" in res.output and "flower_scale" in res.output


@pytest.mark.slow
def test_bench_flower_scale_tiny(tmp_path):
    """`--only flower_scale` on the tiny model: two small federations (4 and 16 clients, 2 sampled a
    round) in Flower's simulation; the three goals' values and the table. Ratios only, no timing asserted."""
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--tiny", "--only", "flower_scale", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data) == {"flower_scale_overhead_100", "flower_scale_wall_1000_vs_100", "flower_scale_peak_gb_1000",
                         "flower_scale_rows"}
    assert [r["clients"] for r in data["flower_scale_rows"]] == [4, 16]
    for r in data["flower_scale_rows"]:
        assert r["sampled"] == 2 and r["round_wall"] > 0 and r["train"] > 0 and 0 < r["peak_pss_gb"] <= r["peak_rss_gb"]
    assert data["flower_scale_wall_1000_vs_100"] > 0 and data["flower_scale_peak_gb_1000"] > 0
    assert "flower_scale: FedAvg + LoRA" in res.output


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


@pytest.mark.parametrize("native, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_precision_is_bf16_only_where_native_and_hparams_say_what_ran(make_scenario, tokens_for, monkeypatch,
                                                                            native, dtype):
    from clsim import precision
    from clsim.config import resolve_scenario
    from clsim.lifecycle import hparams

    monkeypatch.setattr(precision, "native_bf16", lambda device_type="cpu": (native, "test"))
    learner = _learner(make_scenario, tokens_for, train={"precision": "auto"})
    rec = _Dtypes()
    learner.strategy.plugins.append(rec.plugin)
    learner.train_experience(0)
    assert rec.logits and set(rec.logits) == {dtype}
    seen = []
    hook = learner.model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    learner.accuracy_row()
    hook.remove()
    assert set(seen) == {dtype}  # evaluation runs in the precision training ran in
    plan = resolve_scenario(make_scenario(train={"precision": "auto"}))
    assert hparams(plan, plan.strategies[0])["precision"] == ("bf16" if native else "fp32")


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    from clsim import precision

    real_open = builtins.open
    for flags, native in (("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 avx512f", False), ("amx_bf16", True)):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda f, *a, **k: real_open(cpuinfo if f == "/proc/cpuinfo" else f, *a, **k))
        precision.native_bf16.cache_clear()
        assert precision.native_bf16("cpu")[0] is native, flags
        assert precision.resolve("auto", "cpu") == ("bf16" if native else "fp32")
        assert precision.resolve("fp32", "cpu") == "fp32" and precision.resolve("bf16", "cpu") == "bf16"
    monkeypatch.undo()
    precision.native_bf16.cache_clear()
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("fp16", "cpu")


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
