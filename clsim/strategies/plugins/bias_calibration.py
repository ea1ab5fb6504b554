"""Logit bias calibration on the experience's validation split (``train.calibrate: bias``).

A model trained on a stream carries the earlier topics' label prior into the next one: after
airline (21 % neutral) the continual models over-call the minority classes on cars (87.6 %
neutral), so their accuracy there stays at the majority rate while a model fine-tuned on cars
alone beats it. Re-estimating the class prior is the textbook fix for label shift (Saerens et al.
2002; bias-only "vector scaling" in Guo et al. 2017's terms): after an experience trains, fit
one additive offset per class to the head's logits by minimising cross-entropy on that
experience's validation split (L-BFGS on K numbers over cached logits: milliseconds), and fold
the offsets into the head's bias. The model in service is then the calibrated one — evaluation,
checkpoints and the next experience all see it.

It runs before the preset's plugins (see ``build_strategy``), so EWC's anchor, LwF's teacher and
replay's buffer are taken from the calibrated model. ``val`` (experience index -> pooled
features and labels of its validation split, from the learner) is the only data it reaches: no
test split. An experience with no epochs (a periodic strategy between refits) is left alone.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin


class BiasCalibrationPlugin(SupervisedPlugin):
    def __init__(self, val: Callable[[int], tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.val = val
        self.offsets: list[list[float]] = []  # per calibrated experience, the offsets folded into the bias

    def after_training_exp(self, strategy, **kwargs):
        if strategy.train_epochs == 0:
            return
        head = strategy.model.head
        X, y = self.val(strategy.experience.current_experience)
        with torch.no_grad():
            logits = head(X.to(head.weight.device)).float()
        delta = fit_offsets(logits, y.to(logits.device))
        with torch.no_grad():
            head.bias.add_(delta.to(head.bias.dtype))
        self.offsets.append(delta.cpu().tolist())

    def state_dict(self) -> dict:
        return {"offsets": [list(o) for o in self.offsets]}

    def load_state_dict(self, state: dict) -> None:
        self.offsets = [list(o) for o in state["offsets"]]


def fit_offsets(logits: torch.Tensor, y: torch.Tensor, steps: int = 100) -> torch.Tensor:
    """The per-class offsets ``d`` (mean zero) minimising ``cross_entropy(logits + d, y)``. The
    objective is convex in ``d``; a class absent from ``y`` would be pushed to -inf, so a small
    L2 term keeps ``d`` finite."""
    d = torch.zeros(logits.shape[1], dtype=logits.dtype, device=logits.device, requires_grad=True)
    opt = torch.optim.LBFGS([d], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits + d, y) + 1e-4 * d.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    d = d.detach()
    return d - d.mean()
