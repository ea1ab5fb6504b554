"""Periodic re-fine-tune: the production baseline, as an Avalanche plugin.

Every ``period`` experiences (at experience 0, period, 2·period, …) the model is reset to
the weights it had before any training (the pretrained backbone and the initial head),
the optimizer state is cleared, and the model is fine-tuned on the union of the last
``window`` experiences' training data. In between, the model is served unchanged: no
training happens, which is why its compute cost is lower.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Annotated

from avalanche.benchmarks.utils import concat_datasets
from avalanche.core import SupervisedPlugin
from pydantic import Field


class PeriodicRefinetunePlugin(SupervisedPlugin):
    # the annotations are what `clsim validate` checks a preset's values against
    def __init__(self, period: Annotated[int, Field(ge=1)] = 2, window: Annotated[int, Field(ge=1)] = 2):
        super().__init__()
        if int(period) < 1 or int(window) < 1:
            raise ValueError(f"period and window must be >= 1, got period={period}, window={window}")
        self.period, self.window = int(period), int(window)
        self.initial_state: dict | None = None
        self.history: list = []  # training datasets of the last `window` experiences
        self.refits: list[int] = []  # experiences at which the model was reset and refit
        self._saved_epochs: int | None = None

    def is_refit(self, exp_index: int) -> bool:
        return exp_index % self.period == 0

    def before_training(self, strategy, **kwargs):
        if self.initial_state is None:
            self.initial_state = copy.deepcopy({k: v.detach().cpu() for k, v in strategy.model.state_dict().items()})

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        k = strategy.clock.train_exp_counter
        self.history = (self.history + [strategy.experience.dataset])[-self.window:]
        if self.is_refit(k):
            strategy.adapted_dataset = concat_datasets(self.history).train()

    def before_training_exp(self, strategy, **kwargs):
        k = strategy.clock.train_exp_counter
        if self.is_refit(k):
            strategy.model.load_state_dict(self.initial_state)
            strategy.optimizer.state = defaultdict(dict)
            self.refits.append(k)
        else:  # serve unchanged: run no epoch on this experience
            self._saved_epochs, strategy.train_epochs = strategy.train_epochs, 0

    def after_training_exp(self, strategy, **kwargs):
        if self._saved_epochs is not None:
            strategy.train_epochs, self._saved_epochs = self._saved_epochs, None
