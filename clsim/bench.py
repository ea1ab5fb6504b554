"""``clsim bench``: the performance ratios that show where clsim's time goes.

One run on one stream and one model (the tweets + MiniLM; ``tiny``: synthetic + a tiny BERT,
seconds, for tests). Every timing is the best of ``repeats`` interleaved passes, so a busy
machine slows all variants alike rather than whichever ran last. The ratios:

- ``avalanche_vs_plain_loop``: a hand-written PyTorch loop's training time over the very
  batches clsim's strategy loop (Avalanche template + plugins) trained on, divided by the
  strategy loop's — 1.0 means Avalanche costs nothing.
- ``dynamic_vs_fixed_padding``: the same loop and batches padded to ``max_length`` vs to
  the longest sequence in each batch (what clsim does); ``grouped_…``: the same with
  ``train.group_by_length: true`` (batches of neighbours in length).
- ``bf16_vs_fp32``: the strategy loop under ``train.precision: bf16`` vs fp32, and
  ``bf16_acc_drop_points``: final accuracy lost, in points.
- ``head_cached_vs_recompute``: ``finetune: head`` over the stream (training + evaluation)
  recomputing the frozen backbone's features every epoch vs caching them once.
- ``flower_overhead``: (round wall time − slowest client's training) / round wall time,
  4 clients in Flower's simulation — needs the federated path.
- ``lora_vs_full_bytes``: bytes a client sends per round with ``lora`` vs ``full``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from clsim.config import Scenario, StrategyRef

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
def _batch_recorder(pad_id: int):
    """An Avalanche plugin that keeps every training batch, unpadded (to replay them elsewhere)."""
    from avalanche.core import SupervisedPlugin

    class BatchRecorder(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.pad_id = pad_id
            self.batches: list[tuple[list[np.ndarray], np.ndarray]] = []

        def after_forward(self, strategy, **kwargs):
            x = strategy.mb_x.detach().cpu()
            self.batches.append(([row[row != self.pad_id].numpy() for row in x], strategy.mb_y.cpu().numpy()))

    return BatchRecorder()


def plain_loop(model: torch.nn.Module, batches, pad_id: int, train, fixed: int | None = None) -> float:
    """The hand-written baseline: collate, forward, loss, backward, step — nothing else; the
    same optimizer as clsim's (``make_optimizer``). Seconds."""
    from clsim.models import PadCollate
    from clsim.precision import autocast
    from clsim.strategies import make_optimizer

    collate = PadCollate(pad_id, fixed)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], train)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    for ids, ys in batches:
        x, y, _ = collate([(a, b, 0) for a, b in zip(ids, ys)])
        opt.zero_grad()
        with autocast("cpu", train.precision):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def stream_pass(scenario: Scenario, tokens, record=None,
                cache_features: bool = True) -> tuple[float, float, float]:
    """Train + evaluate the naive strategy over the stream: (train s, train + eval s, final acc).

    Training time is the wall time of ``train_experience`` (Avalanche's whole per-experience
    loop), plus the time to cache features when the learner caches them."""
    from clsim.learner import Learner
    from clsim.strategies import resolve

    learner = Learner(scenario, resolve(StrategyRef.model_validate("naive")), tokens, cache_features=cache_features)
    if record is not None:
        learner.strategy.plugins.append(record)
    train = learner.feature_seconds
    t_eval = time.perf_counter()
    learner.evaluate()
    evaluate = time.perf_counter() - t_eval
    row = []
    for i in range(len(tokens)):
        t0 = time.perf_counter()
        learner.train_experience(i)
        train += time.perf_counter() - t0
        t0 = time.perf_counter()
        row = learner.evaluate()
        evaluate += time.perf_counter() - t0
    return train, train + evaluate, float(np.nanmean(row))


def best_of(repeats: int, variants: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Minimum seconds per variant over ``repeats`` interleaved rounds."""
    best = {k: float("inf") for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            best[k] = min(best[k], fn())
    return best


# --------------------------------------------------------------------------- measures
def measure_loops(cfg: BenchConfig, tokens, say) -> list[Result]:
    """Avalanche vs plain loop, dynamic vs fixed padding, bf16 vs fp32 (one shared set of batches)."""
    from clsim.learner import seed_everything
    from clsim.models import build_model

    sc32, sc16 = cfg.scenario(), cfg.scenario(precision="bf16")
    say("warm-up passes (record the batches, random and length-grouped)")
    rec, grouped_rec = _batch_recorder(tokens.pad_id), _batch_recorder(tokens.pad_id)
    stream_pass(sc32, tokens, rec)
    stream_pass(cfg.scenario(group_by_length=True), tokens, grouped_rec)
    batches, grouped = rec.batches, grouped_rec.batches
    n_labels = len(tokens.label_names)

    def plain(fixed=None, batches=batches):
        seed_everything(0)
        model = build_model(sc32.model, n_labels, sc32.seed)
        return plain_loop(model, batches, tokens.pad_id, sc32.train, fixed)

    acc = {}

    def clsim_pass(sc, key):
        def run():
            train, _, acc[key] = stream_pass(sc, tokens)
            return train
        return run

    say(f"timing the training loops, best of {cfg.repeats}")
    t = best_of(cfg.repeats, {"clsim": clsim_pass(sc32, "fp32"), "plain": plain,
                              "fixed": lambda: plain(sc32.model.max_length), "bf16": clsim_pass(sc16, "bf16"),
                              "grouped": lambda: plain(batches=grouped)})

    def width(bs):
        return np.mean([max(len(a) for a in ids) for ids, _ in bs])

    return [
        Result("avalanche_vs_plain_loop", t["plain"] / t["clsim"],
               f"plain {t['plain']:.1f} s, clsim {t['clsim']:.1f} s, {len(batches)} batches"),
        Result("dynamic_vs_fixed_padding", t["fixed"] / t["plain"],
               f"fixed {t['fixed']:.1f} s, dynamic {t['plain']:.1f} s; mean batch width {width(batches):.0f} "
               f"of {sc32.model.max_length}"),
        Result("grouped_dynamic_vs_fixed_padding", t["fixed"] / t["grouped"],
               f"grouped {t['grouped']:.1f} s; mean batch width {width(grouped):.0f}"),
        Result("bf16_vs_fp32", t["clsim"] / t["bf16"], f"fp32 {t['clsim']:.1f} s, bf16 {t['bf16']:.1f} s "
                                                         f"({_bf16_hardware()})"),
        Result("bf16_acc_drop_points", 100 * (acc["fp32"] - acc["bf16"]),
               f"final acc fp32 {acc['fp32']:.3f}, bf16 {acc['bf16']:.3f}"),
    ]


def _bf16_hardware() -> str:
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()}"
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        flags = ""
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return "CPU with " + " + ".join(native) if native else "CPU without native bf16 (no AMX / AVX512-BF16)"


def measure_head_cache(cfg: BenchConfig, tokens, say) -> Result:
    epochs = 2 if cfg.tiny else cfg.head_epochs
    sc = cfg.scenario(epochs=epochs, lr=1e-3)
    sc = sc.model_copy(update={"model": sc.model.model_copy(update={"finetune": "head"})})
    say(f"timing head fine-tuning ({epochs} epochs), cached vs recomputed features")
    accs = {}

    def run(cache):
        def go():
            _, total, accs[cache] = stream_pass(sc, tokens, cache_features=cache)
            return total
        return go

    t = best_of(cfg.repeats, {"recompute": run(False), "cached": run(True)})
    same = "same final acc" if accs[True] == accs[False] else f"acc {accs[False]:.3f} vs {accs[True]:.3f}"
    return Result("head_cached_vs_recompute", t["recompute"] / t["cached"],
                  f"recompute {t['recompute']:.1f} s, cached {t['cached']:.1f} s ({epochs} epochs, "
                  f"train + eval); {same}")


def measure_lora_bytes(cfg: BenchConfig, tokens) -> Result:
    """Bytes of the arrays a client sends per round: only trainable parameters travel."""
    from flwr.app import ArrayRecord

    from clsim.models import build_model

    sizes = {}
    for mode in ("full", "lora"):
        sc = cfg.scenario()
        model = build_model(sc.model.model_copy(update={"finetune": mode}), len(tokens.label_names), 0)
        sizes[mode] = ArrayRecord({k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
                                  ).count_bytes()
    return Result("lora_vs_full_bytes", sizes["lora"] / sizes["full"],
                  f"lora {sizes['lora'] / 1e6:.2f} MB, full {sizes['full'] / 1e6:.1f} MB per client per direction")


def measure_flower(cfg: BenchConfig, tokens, say) -> Result:
    """FedAvg over ``cfg.clients`` simulated clients (Flower's simulation on Ray), all running at once.

    Per round, the train phase's wall time (messages out to the last reply in, as the server
    sees it) against the slowest client's own training time; the first round, which pays for
    process start-up (imports, model load), is left out when there are later ones."""
    import os
    import tempfile

    try:
        from clsim.federated.job import resolve_job
        from clsim.federated.launch import run_simulation_job
    except ImportError as exc:
        return Result("flower_overhead", None, f"missing: the federated path is not available ({exc})")
    cpus = os.cpu_count() or 1
    fedavg = {
        "preset": "fedavg", "clients": cfg.clients, "rounds_per_experience": 2, "partition": {"kind": "iid"},
        "client_resources": {"num_cpus": cpus / cfg.clients},  # every client at once: the round waits for the slowest
        "server_params": {"fraction_train": 1.0, "fraction_evaluate": 0.0}}
    sc = cfg.scenario().model_copy(update={"strategies": [StrategyRef.model_validate(fedavg)]})
    say(f"Flower simulation: FedAvg, {cfg.clients} clients on {cpus} CPUs, {2 * len(tokens)} rounds")
    with tempfile.TemporaryDirectory() as out:
        doc = run_simulation_job(resolve_job(sc, None), out, tokens)
    rounds = [r for r in doc.get("round_log", []) if r.get("train_wall_seconds")]
    if not rounds:
        return Result("flower_overhead", None, "missing: the federated run recorded no round timings")
    steady = rounds[1:] or rounds
    wall = sum(r["train_wall_seconds"] for r in steady)
    slowest = sum(r["slowest_client_train_seconds"] for r in steady)
    first = rounds[0]
    first_overhead = 1 - first["slowest_client_train_seconds"] / first["train_wall_seconds"]
    return Result("flower_overhead", (wall - slowest) / wall,
                  f"rounds {steady[0]['round']}–{steady[-1]['round']}: wall {wall / len(steady):.1f} s, slowest client "
                  f"{slowest / len(steady):.1f} s per round; round 1 (start-up) {first_overhead:.0%}")


# --------------------------------------------------------------------------- all
def run(cfg: BenchConfig | None = None, say: Callable[[str], None] = lambda s: None) -> list[Result]:
    """Every measure, in the order of :data:`GOALS`."""
    from clsim.data import build_stream
    from clsim.models import tokenize_stream

    from transformers.utils import logging as hf_logging

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
