"""The online protocol's serving cost: per arrival, serving (batched inference, no gradients)
against one online step learning from it."""
from __future__ import annotations

import tempfile

from clsim.bench.core import BenchConfig, Result
from clsim.config import StrategyRef, resolve_scenario
from clsim.online import run_online


def measure_online_serving(cfg: BenchConfig, tokens, say) -> Result:
    """The ``online`` preset over the bench stream (the first experience deployed, the second
    arriving 32 per step): its per-arrival serving time (the model in service predicting each
    batch before anything learns from it) against its training time."""
    sc = cfg.scenario()
    sc = sc.model_copy(update={"stream": sc.stream.model_copy(update={"protocol": "online", "arrival_batch": 32}),
                               "strategies": [StrategyRef(preset="online")]})
    plan = resolve_scenario(sc)
    say(f"online protocol: serving vs learning, {len(tokens.train[1].labels)} arrivals")
    with tempfile.TemporaryDirectory() as out:
        doc = run_online(plan, plan.strategies[0], tokens, out)
    c = doc["costs"]
    train_ms = 1000.0 * c["online_train_seconds"] / max(c["online_samples"], 1)
    return Result("online_serve_vs_train", c["serve_ms_per_arrival"] / train_ms,
                  f"serve {c['serve_ms_per_arrival']:.1f} ms, online step {train_ms:.1f} ms per arrival "
                  f"({sc.model.finetune} fine-tuning)")
