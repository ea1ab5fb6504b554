"""LwF whose teacher is in eval mode (``strategies/lwf.yaml``).

Avalanche's ``LwFPlugin`` keeps ``copy.deepcopy(model)`` after each experience — taken during
training, so the copy is in train mode and its dropout is on: the soft targets it distils are
noisy, and differ from call to call. This subclass puts the copy in eval mode once it is taken;
nothing else changes (the checkpoint adapter is LwFPlugin's).
"""
from __future__ import annotations

from avalanche.training.plugins import LwFPlugin


class EvalTeacherLwFPlugin(LwFPlugin):
    def after_training_exp(self, strategy, **kwargs):
        super().after_training_exp(strategy, **kwargs)
        self.lwf.prev_model.eval()
