"""Learning-rate warmup then decay, restarted at every experience (``train.warmup``, ``train.schedule``).

Avalanche's ``LRSchedulerPlugin`` steps one scheduler built up front, but an experience's length is
known only once its loader exists (replay mixes in its buffer, Cumulative and the periodic window
grow), and its reset does not re-apply a warmup's factor at step 0. So this plugin builds
transformers' schedule afresh in ``before_training_exp``, over the experience's optimizer steps
(``len(dataloader) × epochs``; the first ``ceil(warmup × steps)`` warm up linearly from 0), steps it
after every update, and puts the base learning rate back when the experience ends. An experience
that trains no step (a periodic strategy serving its model) gets no schedule.

It runs after the preset's plugins, so it sees the loader and the epoch count they set.
"""
from __future__ import annotations

import math

from avalanche.core import SupervisedPlugin
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup


def warmup_steps(total: int, warmup: float) -> int:
    """Steps of linear warmup out of ``total`` (transformers' Trainer rounds the same way, up)."""
    return math.ceil(total * warmup)


class WarmupSchedulePlugin(SupervisedPlugin):
    def __init__(self, warmup: float = 0.1, schedule: str = "linear"):
        super().__init__()
        if not 0 <= warmup <= 1 or schedule not in ("linear", "constant"):
            raise ValueError(f"warmup must be in [0, 1] and schedule linear or constant, got {warmup}, {schedule!r}")
        self.warmup, self.schedule = float(warmup), schedule
        self.scheduler = None
        self.total = 0

    def before_training_exp(self, strategy, **kwargs):
        self.scheduler = None
        self.total = len(strategy.dataloader) * strategy.train_epochs
        if self.total == 0:
            return
        for group in strategy.optimizer.param_groups:  # every experience starts from the base rate
            group["lr"] = group.setdefault("initial_lr", group["lr"])
        n = warmup_steps(self.total, self.warmup)
        if self.schedule == "linear":
            self.scheduler = get_linear_schedule_with_warmup(strategy.optimizer, n, self.total)
        else:
            self.scheduler = get_constant_schedule_with_warmup(strategy.optimizer, n)

    def after_training_iteration(self, strategy, **kwargs):
        if self.scheduler is not None:
            self.scheduler.step()

    def after_training_exp(self, strategy, **kwargs):
        if self.scheduler is not None:
            for group, base in zip(strategy.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = base
        self.scheduler = None
