"""The client side of FedProx (Li et al. 2020) as an Avalanche plugin.

Flower's ``FedProx`` server strategy only sends ``proximal-mu``; each client must add
``(mu / 2) * ||w - w_global||²`` to its loss, with ``w_global`` the weights it received this
round. Any local preset (naive, replay, EWC, …) gains the term without knowing about it.
"""
from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin


class ProximalPlugin(SupervisedPlugin):
    def __init__(self, mu: float):
        super().__init__()
        self.mu = float(mu)
        self.anchor: dict[str, torch.Tensor] = {}

    def before_training_exp(self, strategy, **kwargs):
        """Anchor at the weights the round started from (the global model just received)."""
        self.anchor = {n: p.detach().clone() for n, p in strategy.model.named_parameters() if p.requires_grad}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        terms = [(p - self.anchor[n]).pow(2).sum() for n, p in model.named_parameters() if n in self.anchor]
        return 0.5 * self.mu * torch.stack(terms).sum() if terms else torch.zeros(())

    def before_backward(self, strategy, **kwargs):
        if self.mu > 0 and self.anchor:
            strategy.loss = strategy.loss + self.penalty(strategy.model)
