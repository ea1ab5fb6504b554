"""The bench's training-loop measures: clsim vs a hand-written loop in lockstep, padding, bf16,
cached ``head`` features, the kept frozen bottom in evaluation, bytes per round with LoRA."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from flwr.app import ArrayRecord
from transformers.trainer_pt_utils import LengthGroupedSampler

from clsim.bench.core import BenchConfig, Result
from clsim.config import Scenario, StrategyRef, resolve_scenario
from clsim.learner import Learner, seed_everything
from clsim.evaluation import confusion_row
from clsim.models import BottomCache, PadCollate, build_model
from clsim.precision import autocast, native_bf16
from clsim.strategies import make_optimizer


@dataclass
class HandLoop:
    """A hand-written PyTorch training loop — collate, forward, loss, backward, step, nothing
    else — on its own copy of the model, with clsim's optimizer (``make_optimizer``)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    collate: Callable
    precision: str = "fp32"
    batches: list | None = None  # its own batches; None: the batch clsim just trained on
    seconds: float = 0.0

    @classmethod
    def build(cls, scenario: Scenario, n_labels: int, pad_id: int, fixed: int | None = None,
              precision: str = "fp32", batches: list | None = None) -> "HandLoop":
        model = build_model(scenario.model, n_labels, scenario.seed).train()
        opt = make_optimizer([p for p in model.parameters() if p.requires_grad], scenario.train)
        return cls(model, opt, PadCollate(pad_id, fixed), precision, batches)

    def step(self, ids: list[np.ndarray], ys) -> None:
        t0 = time.perf_counter()
        x, y, _ = self.collate([(a, b, 0) for a, b in zip(ids, ys)])
        self.optimizer.zero_grad()
        with autocast("cpu", self.precision):
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.seconds += time.perf_counter() - t0


def _lockstep_plugin(loops: dict[str, HandLoop], pad_id: int):
    """After each of clsim's training iterations, one step of every hand loop (in rotating
    order), on the same batch unless the loop brings its own. The global RNG is restored after
    them, so clsim trains exactly as it would alone."""
    class Lockstep(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.k = 0

        def after_training_iteration(self, strategy, **kwargs):
            ids = [row[row != pad_id].numpy() for row in strategy.mb_x.detach().cpu()]
            ys = strategy.mb_y.cpu().numpy()
            order = list(loops.values())
            order = order[self.k % len(order):] + order[:self.k % len(order)]
            with torch.random.fork_rng(devices=[]):
                for loop in order:
                    loop.step(*(loop.batches[self.k] if loop.batches is not None else (ids, ys)))
            self.k += 1

    return Lockstep()


def _naive_learner(scenario: Scenario, tokens, **kw):
    return Learner(scenario, resolve_scenario(scenario.model_copy(update={"strategies": [StrategyRef(preset="naive")]}))
                   .strategies[0], tokens, **kw)


def lockstep_pass(scenario: Scenario, tokens, loops: dict[str, HandLoop]) -> tuple[dict[str, float], float]:
    """clsim's naive strategy over the stream with ``loops`` stepping alongside, batch by batch,
    so a busy machine slows all of them alike: ({"clsim" and each loop: training seconds},
    clsim's final accuracy). clsim's time is its ``train_experience`` wall time (Avalanche's
    whole per-experience loop) less the time the hand loops took inside it."""
    learner = _naive_learner(scenario, tokens)
    learner.strategy.plugins.append(_lockstep_plugin(loops, tokens.pad_id))
    wall = 0.0
    for i in range(len(tokens)):
        t0 = time.perf_counter()
        learner.train_experience(i)
        wall += time.perf_counter() - t0
    row = learner.accuracy_row()
    inside = sum(loop.seconds for loop in loops.values())
    return {"clsim": wall - inside, **{k: loop.seconds for k, loop in loops.items()}}, float(np.nanmean(row))


def interleaved_passes(learners: dict[str, Callable], tokens) -> tuple[dict[str, float], dict[str, float]]:
    """Train + evaluate several learners over the stream, alternating experience by experience:
    ({name: seconds, feature caching included}, {name: final accuracy})."""
    built = {}
    seconds = {}
    for name, make in learners.items():
        built[name] = make()
        t0 = time.perf_counter()
        built[name].accuracy_row()
        seconds[name] = built[name].feature_seconds + time.perf_counter() - t0
    rows = {}
    for i in range(len(tokens)):
        for name, learner in built.items():
            t0 = time.perf_counter()
            learner.train_experience(i)
            rows[name] = learner.accuracy_row()
            seconds[name] += time.perf_counter() - t0
    return seconds, {k: float(np.nanmean(r)) for k, r in rows.items()}


def grouped_batches(scenario: Scenario, tokens) -> list:
    """The length-grouped batches ``train.group_by_length`` would draw (transformers'
    ``LengthGroupedSampler``, seeded per experience as the learner does), unpadded."""
    bs, out = scenario.train.batch_size, []
    for i, split in enumerate(tokens.train):
        seed_everything(scenario.seed * 1000 + i)
        order = list(LengthGroupedSampler(bs, lengths=[len(x) for x in split.ids]))
        out += [([split.ids[j] for j in order[k:k + bs]], split.labels[order[k:k + bs]])
                for k in range(0, len(order), bs)]
    return out


def _mean_width(batches) -> float:
    return float(np.mean([max(len(a) for a in ids) for ids, _ in batches]))


# --------------------------------------------------------------------------- measures
def measure_loops(cfg: BenchConfig, tokens, say, wanted: set[str], shared: dict) -> list[Result]:
    """clsim vs a hand loop, dynamic vs fixed vs length-grouped padding, bf16 vs fp32: all timed
    in lockstep with clsim's own training (only the loops ``wanted`` needs). clsim's final
    accuracy goes to ``shared["acc32"]`` (bf16's accuracy measure compares with it)."""
    sc = cfg.scenario()
    n, pad = len(tokens.label_names), tokens.pad_id
    grouped = grouped_batches(sc, tokens)
    best: dict[str, float] = {}
    for r in range(cfg.repeats):
        say(f"training loops in lockstep, pass {r + 1} of {cfg.repeats}")
        loops = {"hand": HandLoop.build(sc, n, pad)}
        if wanted & {"dynamic_vs_fixed_padding", "grouped_dynamic_vs_fixed_padding"}:
            loops["fixed"] = HandLoop.build(sc, n, pad, fixed=sc.model.max_length)
        if "grouped_dynamic_vs_fixed_padding" in wanted:
            loops["grouped"] = HandLoop.build(sc, n, pad, batches=grouped)
        if "bf16_vs_fp32" in wanted:
            loops["bf16"] = HandLoop.build(sc, n, pad, precision="bf16")
        t, shared["acc32"] = lockstep_pass(sc, tokens, loops)
        best = {k: min(v, best.get(k, float("inf"))) for k, v in t.items()}
    batches = sum(len(s.labels) // sc.train.batch_size + bool(len(s.labels) % sc.train.batch_size)
                  for s in tokens.train)
    b = best
    out = [Result("avalanche_vs_plain_loop", b["hand"] / b["clsim"],
                  f"hand loop {b['hand']:.1f} s, clsim {b['clsim']:.1f} s; {batches} batches")]
    if "fixed" in b:
        out.append(Result("dynamic_vs_fixed_padding", b["fixed"] / b["hand"],
                          f"fixed {b['fixed']:.1f} s, dynamic {b['hand']:.1f} s; random batches, mean width "
                          f"~{_mean_width(_random_batches(sc, tokens)):.0f} of {sc.model.max_length}"))
    if "grouped" in b:
        out.append(Result("grouped_dynamic_vs_fixed_padding", b["fixed"] / b["grouped"],
                          f"grouped {b['grouped']:.1f} s; mean width {_mean_width(grouped):.0f}"))
    if "bf16" in b:
        out.append(Result("bf16_vs_fp32", b["hand"] / b["bf16"],
                          f"fp32 {b['hand']:.1f} s, bf16 {b['bf16']:.1f} s; {native_bf16('cpu')[1]}"))
    return [r for r in out if r.name in wanted]


def measure_bf16_accuracy(cfg: BenchConfig, tokens, say, shared: dict) -> Result:
    """Final accuracy lost by clsim with ``train.precision: bf16`` (vs fp32: the lockstep pass's
    when it ran, else an fp32 run alongside)."""
    say("clsim with train.precision: bf16 (accuracy)")
    learners = {"bf16": lambda: _naive_learner(cfg.scenario(precision="bf16"), tokens)}
    if "acc32" not in shared:
        learners["fp32"] = lambda: _naive_learner(cfg.scenario(), tokens)
    t, acc = interleaved_passes(learners, tokens)
    acc32 = shared.get("acc32", acc.get("fp32"))
    return Result("bf16_acc_drop_points", 100 * (acc32 - acc["bf16"]),
                  f"final acc fp32 {acc32:.3f}, bf16 {acc['bf16']:.3f} (clsim, bf16 run {t['bf16']:.0f} s)")


def _random_batches(scenario: Scenario, tokens) -> list:
    """Batches as a shuffled loader draws them (for their mean padded width)."""
    rng = np.random.default_rng(scenario.seed)
    bs, out = scenario.train.batch_size, []
    for split in tokens.train:
        order = rng.permutation(len(split.ids))
        out += [([split.ids[j] for j in order[k:k + bs]], None) for k in range(0, len(order), bs)]
    return out


def measure_head_cache(cfg: BenchConfig, tokens, say) -> Result:
    """``finetune: head`` over the stream, training + evaluation, recomputing the frozen
    backbone's features every epoch vs caching them; the two learners alternate per experience."""
    epochs = 2 if cfg.tiny else cfg.head_epochs
    sc = cfg.scenario(epochs=epochs, lr=1e-3)
    sc = sc.model_copy(update={"model": sc.model.model_copy(update={"finetune": "head"})})
    best: dict[str, float] = {}
    for r in range(cfg.repeats):
        say(f"head fine-tuning ({epochs} epochs), cached vs recomputed features, pass {r + 1} of {cfg.repeats}")
        t, acc = interleaved_passes({"recompute": lambda: _naive_learner(sc, tokens, cache_features=False),
                                     "cached": lambda: _naive_learner(sc, tokens, cache_features=True)}, tokens)
        best = {k: min(v, best.get(k, float("inf"))) for k, v in t.items()}
    same = "same final acc" if acc["recompute"] == acc["cached"] else \
        f"acc {acc['recompute']:.3f} vs {acc['cached']:.3f}"
    return Result("head_cached_vs_recompute", best["recompute"] / best["cached"],
                  f"recompute {best['recompute']:.1f} s, cached {best['cached']:.1f} s ({epochs} epochs, "
                  f"train + eval); {same}")


def measure_bottom_cache(cfg: BenchConfig, tokens, say) -> Result:
    """Evaluation on every test set of a model whose lowest 2 layers are frozen (``finetune:
    partial``): a full forward pass vs the frozen bottom's output kept from the first evaluation
    (``clsim.models.BottomCache``, what a run does from its second evaluation on). The two
    alternate; the best of ``repeats`` counts."""
    sc = cfg.scenario()
    model = build_model(sc.model.model_copy(update={"finetune": "partial", "freeze_layers": 2}),
                        len(tokens.label_names), 0)
    n, bs = len(tokens.label_names), sc.train.eval_batch_size
    cache = BottomCache()
    confusion_row(model, tokens.test, n, bs, "cpu", cache=cache)  # a run's first evaluation fills it
    best: dict[str, float] = {}
    rows: dict[str, list] = {}
    for r in range(cfg.repeats):
        say(f"evaluation with the lowest 2 layers frozen, full forward vs kept bottom, pass {r + 1} of {cfg.repeats}")
        for name, kept in (("full", None), ("kept", cache)):
            t0 = time.perf_counter()
            rows[name] = confusion_row(model, tokens.test, n, bs, "cpu", cache=kept)
            best[name] = min(time.perf_counter() - t0, best.get(name, float("inf")))
    same = all(np.array_equal(a, b) for a, b in zip(rows["full"], rows["kept"]))
    return Result("eval_kept_bottom_vs_full", best["full"] / best["kept"],
                  f"full {best['full']:.2f} s, kept {best['kept']:.2f} s per evaluation of "
                  f"{sum(len(t.labels) for t in tokens.test)} texts; "
                  + ("same confusion matrices" if same else "DIFFERENT confusion matrices"))


def measure_lora_bytes(cfg: BenchConfig, tokens) -> Result:
    """Bytes of the arrays a client sends per round: only trainable parameters travel."""
    sizes = {}
    for mode in ("full", "lora"):
        sc = cfg.scenario()
        model = build_model(sc.model.model_copy(update={"finetune": mode}), len(tokens.label_names), 0)
        sizes[mode] = ArrayRecord({k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
                                  ).count_bytes()
    return Result("lora_vs_full_bytes", sizes["lora"] / sizes["full"],
                  f"lora {sizes['lora'] / 1e6:.2f} MB, full {sizes['full'] / 1e6:.1f} MB per client per direction")
