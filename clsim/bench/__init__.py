"""``clsim bench``: the performance ratios that show where clsim's time goes.

One run on one stream and one model (the tweets + MiniLM; ``tiny``: synthetic + a tiny BERT,
seconds, for tests). A shared 2-core machine is noisy at the scale of seconds, so variants
are timed side by side rather than one after another: the hand-written loops step in
lockstep with clsim's own training, batch by batch, and the head-fine-tuning learners
alternate experience by experience; the best of ``repeats`` such passes counts. The ratios:

- ``avalanche_vs_plain_loop``: a hand-written PyTorch loop's training time on the very
  batches clsim's strategy loop (Avalanche template + plugins) trains on, divided by the
  strategy loop's — 1.0 means Avalanche costs nothing.
- ``dynamic_vs_fixed_padding``: the hand loop padding to ``max_length`` vs to the longest
  sequence in each batch (what clsim does); ``grouped_…``: the same with batches of
  neighbours in length (``train.group_by_length: true``).
- ``bf16_vs_fp32``: the hand loop under bf16 autocast (what ``train.precision: bf16`` does)
  vs fp32; ``bf16_acc_drop_points``: final accuracy lost by clsim with bf16, in points.
- ``head_cached_vs_recompute``: ``finetune: head`` over the stream (training + evaluation)
  recomputing the frozen backbone's features every epoch vs caching them once.
- ``flower_overhead``: (round wall time − slowest client's training) / round wall time,
  4 clients in Flower's simulation — needs the federated path.
- ``lora_vs_full_bytes``: bytes a client sends per round with ``lora`` vs ``full``.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from flwr.app import ArrayRecord
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.utils import logging as hf_logging

from clsim.config import Scenario, StrategyRef, resolve_scenario
from clsim.data import build_stream
from clsim.federated.job import federated_job
from clsim.federated.launch import run_simulation_job
from clsim.federated.schema import FEDERATED
from clsim.learner import Learner, seed_everything
from clsim.models import PadCollate, build_model, tokenize_stream
from clsim.precision import autocast
from clsim.strategies import make_optimizer

# name -> (comparison, goal, what it measures)
GOALS: dict[str, tuple[str, float, str]] = {
    "avalanche_vs_plain_loop": (">=", 0.95, "plain PyTorch loop time / clsim strategy loop time, same batches"),
    "dynamic_vs_fixed_padding": (">=", 1.6, "train time padded to max_length / dynamic padding"),
    "grouped_dynamic_vs_fixed_padding": (">=", 1.6, "the same with train.group_by_length: true"),
    "bf16_vs_fp32": (">=", 1.5, "fp32 train time / bf16 autocast train time"),
    "bf16_acc_drop_points": ("<", 1.0, "final accuracy fp32 − bf16, in points"),
    "head_cached_vs_recompute": (">=", 5.0, "head fine-tuning (train + eval) recomputing features / cached"),
    "flower_overhead": ("<=", 0.15, "(round wall − slowest client's training) / round wall, 4 clients"),
    "lora_vs_full_bytes": ("<=", 0.02, "bytes per round with lora / with full fine-tuning"),
}


@dataclass
class Result:
    """One line of the bench table."""

    name: str
    value: float | None
    detail: str = ""

    @property
    def goal(self) -> str:
        op, goal, _ = GOALS[self.name]
        return f"{op} {goal:g}"

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        op, goal, _ = GOALS[self.name]
        return {">=": self.value >= goal, "<=": self.value <= goal, "<": self.value < goal}[op]


@dataclass
class BenchConfig:
    """What the bench runs on; ``tiny()`` is the seconds-long version for tests."""

    tiny: bool = False
    repeats: int = 2
    head_epochs: int = 5
    experiences: list[str] = field(default_factory=lambda: ["airline", "cars"])
    train_per_experience: int = 300
    test_per_experience: int = 150
    clients: int = 4

    def scenario(self, **train) -> Scenario:
        if self.tiny:
            stream = {"source": "synthetic", "experiences": ["food", "tech"],
                      "train_per_experience": 32, "test_per_experience": 16}
            model = {"pretrained": "tiny", "finetune": "full", "max_length": 32}
        else:
            stream = {"source": "tweets", "experiences": self.experiences,
                      "train_per_experience": self.train_per_experience,
                      "test_per_experience": self.test_per_experience}
            model = {"pretrained": "minilm", "finetune": "full", "max_length": 64}
        return Scenario.model_validate({
            "name": "bench", "seed": 0, "stream": stream, "model": model,
            "train": {"epochs": 1, "batch_size": 16, "lr": 5e-5, **train}, "strategies": ["naive"]})


# --------------------------------------------------------------------------- loops
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
    row = learner.evaluate()
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
        built[name].evaluate()
        seconds[name] = built[name].feature_seconds + time.perf_counter() - t0
    rows = {}
    for i in range(len(tokens)):
        for name, learner in built.items():
            t0 = time.perf_counter()
            learner.train_experience(i)
            rows[name] = learner.evaluate()
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
def measure_loops(cfg: BenchConfig, tokens, say) -> list[Result]:
    """clsim vs a hand loop, dynamic vs fixed vs length-grouped padding, bf16 vs fp32: all
    timed in lockstep with clsim's own training; bf16's accuracy from a separate clsim run."""
    sc = cfg.scenario()
    n, pad = len(tokens.label_names), tokens.pad_id
    grouped = grouped_batches(sc, tokens)
    best: dict[str, float] = {}
    acc32 = float("nan")
    for r in range(cfg.repeats):
        say(f"training loops in lockstep, pass {r + 1} of {cfg.repeats}")
        loops = {"hand": HandLoop.build(sc, n, pad),
                 "fixed": HandLoop.build(sc, n, pad, fixed=sc.model.max_length),
                 "grouped": HandLoop.build(sc, n, pad, batches=grouped),
                 "bf16": HandLoop.build(sc, n, pad, precision="bf16")}
        t, acc32 = lockstep_pass(sc, tokens, loops)
        best = {k: min(v, best.get(k, float("inf"))) for k, v in t.items()}
    say("clsim with train.precision: bf16 (accuracy)")
    t16, acc16 = interleaved_passes({"bf16": lambda: _naive_learner(cfg.scenario(precision="bf16"), tokens)}, tokens)
    batches = sum(len(s.labels) // sc.train.batch_size + bool(len(s.labels) % sc.train.batch_size)
                  for s in tokens.train)
    b = best
    return [
        Result("avalanche_vs_plain_loop", b["hand"] / b["clsim"],
               f"hand loop {b['hand']:.1f} s, clsim {b['clsim']:.1f} s; {batches} batches"),
        Result("dynamic_vs_fixed_padding", b["fixed"] / b["hand"],
               f"fixed {b['fixed']:.1f} s, dynamic {b['hand']:.1f} s; random batches, mean width "
               f"~{_mean_width(_random_batches(sc, tokens)):.0f} "
               f"of {sc.model.max_length}"),
        Result("grouped_dynamic_vs_fixed_padding", b["fixed"] / b["grouped"],
               f"grouped {b['grouped']:.1f} s; mean width {_mean_width(grouped):.0f}"),
        Result("bf16_vs_fp32", b["hand"] / b["bf16"],
               f"fp32 {b['hand']:.1f} s, bf16 {b['bf16']:.1f} s; {_bf16_hardware()}"),
        Result("bf16_acc_drop_points", 100 * (acc32 - acc16["bf16"]),
               f"final acc fp32 {acc32:.3f}, bf16 {acc16['bf16']:.3f} (clsim, bf16 run {t16['bf16']:.0f} s)"),
    ]


def _random_batches(scenario: Scenario, tokens) -> list:
    """Batches as a shuffled loader draws them (for their mean padded width)."""
    rng = np.random.default_rng(scenario.seed)
    bs, out = scenario.train.batch_size, []
    for split in tokens.train:
        order = rng.permutation(len(split.ids))
        out += [([split.ids[j] for j in order[k:k + bs]], None) for k in range(0, len(order), bs)]
    return out


def _bf16_hardware() -> str:
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()}"
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        flags = ""
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return "CPU with " + " + ".join(native) if native else "CPU without native bf16 (no AMX, no AVX512-BF16)"


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


def measure_flower(cfg: BenchConfig, tokens, say) -> Result:
    """FedAvg over ``cfg.clients`` simulated clients (2 in tiny mode) in Flower's simulation on Ray, all at once.

    Per round, the train phase's wall time (messages out to the last reply in, as the server
    sees it) against the slowest client's own training time; the first round, which pays for
    process start-up (imports, model load), is left out when there are later ones."""
    cpus = os.cpu_count() or 1
    rpe, clients = (1, 2) if cfg.tiny else (2, cfg.clients)  # tiny: the plumbing only, fewer actors to start
    fedavg = {
        "preset": "fedavg", "clients": clients, "rounds_per_experience": rpe, "partition": {"kind": "iid"},
        "client_resources": {"num_cpus": cpus / clients},  # every client at once: the round waits for the slowest
        "server_params": {"fraction_train": 1.0, "fraction_evaluate": 0.0}}
    sc = cfg.scenario().model_copy(update={"strategies": [StrategyRef.model_validate(fedavg)]})
    say(f"Flower simulation: FedAvg, {clients} clients on {cpus} CPUs, {rpe * len(tokens)} rounds")
    with tempfile.TemporaryDirectory() as out:
        doc = run_simulation_job(federated_job(resolve_scenario(sc, extensions=(FEDERATED,))), out, tokens)
    rounds = [r for r in doc.get("round_log", []) if r.get("train_wall_seconds")]
    if not rounds:
        return Result("flower_overhead", None, "missing: the federated run recorded no round timings")
    steady = rounds[1:] or rounds
    wall = sum(r["train_wall_seconds"] for r in steady)
    slowest = sum(r["slowest_client_train_seconds"] for r in steady)
    first = rounds[0]
    first_overhead = 1 - first["slowest_client_train_seconds"] / first["train_wall_seconds"]
    return Result("flower_overhead", (wall - slowest) / wall,
                  f"{_span([r['round'] for r in steady])}: wall {wall / len(steady):.1f} s, slowest client "
                  f"{slowest / len(steady):.1f} s per round; round 1 (start-up) {first_overhead:.0%}")


def _span(rounds: list[int]) -> str:
    return f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]}–{rounds[-1]}"


# --------------------------------------------------------------------------- all
def run(cfg: BenchConfig | None = None, say: Callable[[str], None] = lambda s: None) -> list[Result]:
    """Every measure, in the order of :data:`GOALS`."""
    hf_logging.set_verbosity_error()  # the bench builds many models: no load reports or progress bars
    hf_logging.disable_progress_bar()
    cfg = cfg or BenchConfig()
    sc = cfg.scenario()
    say(f"stream: {'synthetic' if cfg.tiny else 'tweets'} {len(sc.stream.experiences)} experiences × "
        f"{sc.stream.train_per_experience} train / {sc.stream.test_per_experience} test; model "
        f"{sc.model.pretrained}; torch threads {torch.get_num_threads()}")
    tokens = tokenize_stream(build_stream(sc.stream, sc.seed), sc.model)
    results = measure_loops(cfg, tokens, say)
    results.append(measure_head_cache(cfg, tokens, say))
    results.append(measure_flower(cfg, tokens, say))
    results.append(measure_lora_bytes(cfg, tokens))
    return results


def as_json(results: list[Result]) -> dict[str, float | None]:
    return {r.name: r.value for r in results}
