"""Periodic re-fine-tune: the production baseline, as an Avalanche plugin.

Data arrives one experience at a time; every ``period`` experiences, once a window is complete
(after experiences period−1, 2·period−1, …), the model is refit on the union of the last
``window`` experiences' training data, and the optimizer state is cleared. ``start: pretrained``
refits from the weights the model had before any training (the pretrained backbone and the
initial head); ``start: current`` continues from the model in service. In between, the model is
served unchanged: no epoch runs, which is why its compute cost is lower. Refitting at the end
of a window (not its start) means the model in service never misses a whole window it could
have trained on; before the first refit it is the pretrained model.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Annotated, Literal

from avalanche.benchmarks.utils import concat_datasets
from avalanche.core import SupervisedPlugin
from pydantic import Field


def refit_experiences(period: int, experiences: int) -> list[int]:
    """The experiences after which the model is refit: period−1, 2·period−1, … (< ``experiences``)."""
    return [k for k in range(experiences) if (k + 1) % period == 0]


class PeriodicRefinetunePlugin(SupervisedPlugin):
    # the annotations are what `clsim validate` checks a preset's values against
    def __init__(self, period: Annotated[int, Field(ge=1)] = 2, window: Annotated[int, Field(ge=1)] = 2,
                 start: Literal["pretrained", "current"] = "pretrained"):
        super().__init__()
        if int(period) < 1 or int(window) < 1 or start not in ("pretrained", "current"):
            raise ValueError(f"period and window must be >= 1 and start pretrained or current, "
                             f"got period={period}, window={window}, start={start!r}")
        self.period, self.window, self.start = int(period), int(window), start
        self.initial_state: dict | None = None  # the pretrained weights (start: pretrained only)
        self.history: list = []  # training datasets of the last `window` experiences
        self.refits: list[int] = []  # experiences at which the model was refit
        self._saved_epochs: int | None = None

    def is_refit(self, exp_index: int) -> bool:
        return (exp_index + 1) % self.period == 0

    def before_training(self, strategy, **kwargs):
        if self.start == "pretrained" and self.initial_state is None:
            self.initial_state = copy.deepcopy({k: v.detach().cpu() for k, v in strategy.model.state_dict().items()})

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        k = strategy.clock.train_exp_counter
        self.history = (self.history + [strategy.experience.dataset])[-self.window:]
        if self.is_refit(k):
            strategy.adapted_dataset = concat_datasets(self.history).train()

    def before_training_exp(self, strategy, **kwargs):
        k = strategy.clock.train_exp_counter
        if self.is_refit(k):
            if self.start == "pretrained":
                strategy.model.load_state_dict(self.initial_state)
            strategy.optimizer.state = defaultdict(dict)
            self.refits.append(k)
        else:  # serve unchanged: run no epoch on this experience
            self._saved_epochs, strategy.train_epochs = strategy.train_epochs, 0

    def after_training_exp(self, strategy, **kwargs):
        if self._saved_epochs is not None:
            strategy.train_epochs, self._saved_epochs = self._saved_epochs, None
