"""Logit calibration on the experience's validation split (``train.calibrate``).

A model trained on a stream carries the earlier topics' label prior into the next one: after
airline (21 % neutral) the continual models over-call the minority classes on cars (87.6 %
neutral). After an experience trains, this fits on that experience's labelled validation split,
by minimising cross-entropy over the head's cached logits (L-BFGS on a handful of numbers:
milliseconds):

- ``bias``: one additive offset per class;
- ``bcts``: the offsets and one temperature together — bias-corrected temperature scaling, which
  Alexandari et al. (ICML 2020) found the best calibration for label-shift adaptation (``bias``
  is BCTS without its temperature): an over-confident model's offsets are otherwise fitted to
  its over-confidence.

Both are folded into the head (``W/T``, ``b/T + d``), so the model in service is the calibrated
one: evaluation, checkpoints and the next experience all see it. It runs before the preset's
plugins (see ``build_strategy``), so EWC's anchor, LwF's teacher and replay's buffer are taken
from the calibrated model. ``val`` (experience index -> pooled features and labels of its
validation split, from the learner) is the only data it is handed. An experience
with no epochs (a periodic strategy between refits) is left alone.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin


class CalibrationPlugin(SupervisedPlugin):
    def __init__(self, val: Callable[[int], tuple[torch.Tensor, torch.Tensor]], method: str = "bias"):
        super().__init__()
        self.val, self.method = val, method
        # per calibrated experience: the offsets and the temperature folded into the head
        self.offsets: list[list[float]] = []
        self.temperatures: list[float] = []

    def after_training_exp(self, strategy, **kwargs):
        if strategy.train_epochs == 0:
            return
        head = strategy.model.head
        X, y = self.val(strategy.experience.current_experience)
        with torch.no_grad():
            logits = head(X.to(head.weight.device)).float()
        delta, temperature = fit_calibration(logits, y.to(logits.device), temperature=self.method == "bcts")
        with torch.no_grad():
            head.weight.div_(temperature)
            head.bias.div_(temperature).add_(delta.to(head.bias.dtype))
        self.offsets.append(delta.cpu().tolist())
        self.temperatures.append(temperature)

    def state_dict(self) -> dict:
        return {"offsets": [list(o) for o in self.offsets], "temperatures": list(self.temperatures)}

    def load_state_dict(self, state: dict) -> None:
        self.offsets = [list(o) for o in state["offsets"]]
        self.temperatures = list(state["temperatures"])


def fit_calibration(logits: torch.Tensor, y: torch.Tensor, temperature: bool = False,
                steps: int = 100) -> tuple[torch.Tensor, float]:
    """The per-class offsets ``d`` (mean zero) — and with ``temperature`` a ``T > 0`` — minimising
    ``cross_entropy(logits / T + d, y)``. A class absent from ``y`` would push its offset to
    -inf, so a small L2 term keeps ``d`` finite."""
    d = torch.zeros(logits.shape[1], dtype=logits.dtype, device=logits.device, requires_grad=True)
    log_t = torch.zeros((), dtype=logits.dtype, device=logits.device, requires_grad=temperature)
    opt = torch.optim.LBFGS([d, log_t] if temperature else [d], lr=1.0, max_iter=steps,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits * torch.exp(-log_t) + d, y) + 1e-4 * d.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    d = d.detach()
    return d - d.mean(), float(torch.exp(log_t.detach()))
