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
- ``eval_kept_bottom_vs_full``: evaluating on every test set with the lowest 2 layers frozen
  (``finetune: partial``), a full forward pass vs the frozen bottom's output kept.
- ``ewc_trainable_vs_all_anchors``: EWC over drift_sentiment's six topics (the lowest 2 layers
  frozen), its anchors on every parameter (Avalanche's plugin alone) vs on the trainable ones
  (what clsim does: the same penalty without its exact zeros); training time, which is all it changes.
- ``flower_overhead``: (round wall time − slowest client's training) / round wall time,
  4 clients in Flower's simulation — needs the federated path.
- ``lora_vs_full_bytes``: bytes a client sends per round with ``lora`` vs ``full``.
- ``online_serve_vs_train``: under the online protocol (``clsim.online``), serving an arrival
  (batched inference, no gradients) vs one online step learning from it, per arrival.
- ``flower_scale_…``: FedAvg with LoRA over 10, 100 and 1,000 simulated clients, 10 sampled a
  round (:mod:`clsim.federated.scale`): the overhead at 100, the round wall time at 1,000 vs 100,
  and peak memory at 1,000.

Each measure is reported as soon as it is known (``on_result``); ``only`` picks measures by
name. The bf16 measures are skipped, saying why, on a CPU without native bf16 (emulated there,
so slower by construction) unless asked for by name.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers.utils import logging as hf_logging

from clsim.bench.anchors import measure_ewc_anchors
from clsim.bench.core import BF16, GOALS, GROUPS, BenchConfig, Result
from clsim.bench.flower import measure_flower, measure_flower_scale
from clsim.bench.loops import (
    measure_bf16_accuracy,
    measure_bottom_cache,
    measure_head_cache,
    measure_loops,
    measure_lora_bytes,
)
from clsim.bench.online import measure_online_serving
from clsim.config import ConfigError
from clsim.data import build_stream
from clsim.federated.scale import ScaleRow
from clsim.models import tokenize_stream
from clsim.precision import native_bf16

__all__ = ["BF16", "GOALS", "GROUPS", "BenchConfig", "Result", "ScaleRow", "as_json",
           "measure_online_serving", "run", "selected"]

def selected(only: list[str] | None) -> set[str]:
    """The measures ``--only`` names (measure names, or ``flower_scale`` for its three); all if None."""
    if not only:
        return set(GOALS)
    out = set()
    for name in only:
        if name not in GOALS and name != "flower_scale":
            raise ConfigError(None, "--only", f"unknown measure {name!r}; expected some of "
                                              f"{sorted([*GOALS, 'flower_scale'])}")
        out.update(GROUPS["flower_scale"] if name == "flower_scale" else [name])
    return out


def run(cfg: BenchConfig | None = None, say: Callable[[str], None] = lambda s: None,
        on_result: Callable[[Result], None] = lambda r: None, only: list[str] | None = None,
        scale_rows: list[ScaleRow] | None = None) -> list[Result]:
    """The measures ``only`` names (default: all), in the order of :data:`GOALS`; each goes to
    ``on_result`` as soon as it is known. Without native bf16 the bf16 measures are skipped
    (value None, the reason as detail) unless ``only`` names them."""
    hf_logging.set_verbosity_error()  # the bench builds many models: no load reports or progress bars
    hf_logging.disable_progress_bar()
    cfg = cfg or BenchConfig()
    wanted = selected(only)
    results: list[Result] = []

    def done(new: list[Result]) -> None:
        for r in new:
            results.append(r)
            on_result(r)

    native, hardware = native_bf16("cpu")  # the bench trains on the CPU
    if not native:
        skip = [n for n in BF16 if n in wanted and n not in (only or [])]
        done([Result(n, None, f"skipped: {hardware}; `--only {n}` measures it anyway") for n in skip])
        wanted -= set(skip)
    sc = cfg.scenario()
    tokens, shared = None, {}
    if wanted - set(GROUPS["flower_scale"]):
        say(f"stream: {'synthetic' if cfg.tiny else 'tweets'} {len(sc.stream.experiences)} experiences × "
            f"{sc.stream.train_per_experience} train / {sc.stream.test_per_experience} test; model "
            f"{sc.model.pretrained}; torch threads {torch.get_num_threads()}")
        tokens = tokenize_stream(build_stream(sc.stream, sc.seed), sc.model)
    if wanted & set(GROUPS["loops"]):
        done(measure_loops(cfg, tokens, say, wanted, shared))
    if "bf16_acc_drop_points" in wanted:
        done([measure_bf16_accuracy(cfg, tokens, say, shared)])
    if "head_cached_vs_recompute" in wanted:
        done([measure_head_cache(cfg, tokens, say)])
    if "eval_kept_bottom_vs_full" in wanted:
        done([measure_bottom_cache(cfg, tokens, say)])
    if "ewc_trainable_vs_all_anchors" in wanted:
        done([measure_ewc_anchors(cfg, say)])
    if "flower_overhead" in wanted:
        done([measure_flower(cfg, tokens, say)])
    if "lora_vs_full_bytes" in wanted:
        done([measure_lora_bytes(cfg, tokens)])
    if "online_serve_vs_train" in wanted:
        done([measure_online_serving(cfg, tokens, say)])
    if wanted & set(GROUPS["flower_scale"]):
        done([r for r in measure_flower_scale(cfg, say, scale_rows if scale_rows is not None else [])
              if r.name in wanted])
    order = list(GOALS)
    return sorted(results, key=lambda r: order.index(r.name))


def as_json(results: list[Result], scale_rows: list[ScaleRow] | None = None) -> dict:
    """``{measure: value}`` (null: skipped), and the flower_scale table when it was measured."""
    out: dict = {r.name: r.value for r in results}
    if scale_rows:
        out["flower_scale_rows"] = [{**vars(r), "overhead": r.overhead} for r in scale_rows]
    return out
