"""Early stopping on the experience's validation split (``train.patience``), best epoch restored.

Avalanche's ``EarlyStoppingPlugin`` reads a metric of the periodic evaluation, which runs before
the linear probe (so its "epoch 0" is a model with a stale head) and never restores the best
weights when training runs all its epochs. This one scores the model itself, through ``score``
(experience index -> validation accuracy; the learner passes it, so test splits are out of
reach): once after the probe — the LP-only model is epoch 0 — and after every epoch. Training
stops after ``patience`` epochs without a strictly better score, and the best epoch's weights
are loaded back at the end of the epoch loop, before any preset plugin's ``after_training_exp``
(EWC's importances and anchor, LwF's teacher, the replay buffer) sees the model. Ties keep the
earlier, shorter-trained model. Scoring is part of training time; the epochs it discards still
count as samples trained. An experience with no epochs (a periodic strategy between refits) is
not scored.
"""
from __future__ import annotations

from typing import Callable

from avalanche.core import SupervisedPlugin


class EarlyStoppingPlugin(SupervisedPlugin):
    def __init__(self, patience: int, score: Callable[[int], float]):
        super().__init__()
        self.patience, self.score = int(patience), score
        # one entry per trained experience: its index, epochs trained, the epoch kept (0: the probe's
        # model) and that epoch's validation accuracy
        self.experience: list[int] = []
        self.epochs: list[int] = []
        self.best_epoch: list[int] = []
        self.best_score: list[float] = []
        self._active = False

    def before_training_exp(self, strategy, **kwargs):
        self._active = strategy.train_epochs > 0
        if not self._active:
            return
        self._exp, self._epoch = strategy.experience.current_experience, 0
        self._keep(strategy, self.score(self._exp))

    def _keep(self, strategy, value: float) -> None:
        self._best = (value, self._epoch, {k: v.detach().clone() for k, v in strategy.model.state_dict().items()})

    def after_training_epoch(self, strategy, **kwargs):
        if not self._active:
            return
        self._epoch += 1
        value = self.score(self._exp)
        if value > self._best[0]:
            self._keep(strategy, value)
        last = self._epoch >= strategy.train_epochs
        if not last and self._epoch - self._best[1] < self.patience:
            return
        best, epoch, weights = self._best
        if epoch != self._epoch:
            strategy.model.load_state_dict(weights)
        self.experience.append(self._exp)
        self.epochs.append(self._epoch)
        self.best_epoch.append(epoch)
        self.best_score.append(float(best))
        self._active, self._best = False, None
        if not last:
            strategy.stop_training()

    def state_dict(self) -> dict:
        return {"experience": list(self.experience), "epochs": list(self.epochs),
                "best_epoch": list(self.best_epoch), "best_score": list(self.best_score)}

    def load_state_dict(self, state: dict) -> None:
        self.experience, self.epochs = [int(v) for v in state["experience"]], [int(v) for v in state["epochs"]]
        self.best_epoch = [int(v) for v in state["best_epoch"]]
        self.best_score = [float(v) for v in state["best_score"]]

