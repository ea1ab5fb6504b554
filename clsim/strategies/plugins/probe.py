"""Costs and training signals every run records, as one Avalanche plugin.

It must be the first plugin so that, in ``before_backward``, ``strategy.loss`` is still the
task loss; after backward it holds the total, and the difference is what regularising
plugins (EWC, LwF, …) added. ``reg_ratio`` = regulariser / task loss, per experience.
"""
from __future__ import annotations

import time
from typing import Callable

from avalanche.core import SupervisedPlugin


class ProbePlugin(SupervisedPlugin):
    def __init__(self, on_batch: Callable[[int, int, int], None] | None = None):
        super().__init__()
        self.on_batch = on_batch
        self.train_seconds: list[float] = []
        self.samples: list[int] = []
        self.loss: list[float] = []
        self.reg_ratio: list[float] = []
        self._task = self._total = 0.0
        self._batches = 0
        self._t0 = 0.0

    def before_training_exp(self, strategy, **kwargs):
        self._t0 = time.perf_counter()
        self._task = self._total = 0.0
        self._batches = 0
        self.samples.append(0)
        if self.on_batch:
            total = len(strategy.dataloader) * strategy.train_epochs
            self.on_batch(strategy.clock.train_exp_counter, 0, total)

    def before_backward(self, strategy, **kwargs):
        self._task += float(strategy.loss.detach())

    def after_backward(self, strategy, **kwargs):
        self._total += float(strategy.loss.detach())
        self._batches += 1

    def after_training_iteration(self, strategy, **kwargs):
        self.samples[-1] += len(strategy.mb_y)
        if self.on_batch:
            self.on_batch(strategy.clock.train_exp_counter, self._batches,
                          len(strategy.dataloader) * strategy.train_epochs)

    def after_training_exp(self, strategy, **kwargs):
        self.train_seconds.append(time.perf_counter() - self._t0)
        n = max(self._batches, 1)
        task, total = self._task / n, self._total / n
        self.loss.append(task if self._batches else float("nan"))
        self.reg_ratio.append((total - task) / task if self._batches and task > 0 else 0.0)
