"""The linear-probe stage of LP-FT (``train.lp_epochs``, ``train.lp_lr``), before every experience's fine-tuning.

Fine-tuning a backbone under a random (or stale) head bends the backbone toward that head: with
few steps at a small learning rate the model collapses onto one class. LP-FT (Kumar et al. 2022)
first fits the head alone on the backbone's frozen features, then fine-tunes everything from a
head that already fits. Here, on every experience that trains: the pooled features of the
experience's training texts (``adapted_dataset``: the union for Cumulative and the periodic
window; replay's buffer is not included) are computed once from the current backbone in eval
mode without gradients, then the head trains ``epochs`` epochs on them with its own AdamW —
a few milliseconds per epoch, since no batch passes the backbone again. Only plain
cross-entropy: regularisers (EWC, LwF) act during fine-tuning.

It runs after the preset's plugins (a periodic refit or a from-scratch reset has put the
weights back first; an experience with no epochs is skipped) and after the cost probe's clock
started, so its time is training time. Its shuffling draws from a generator seeded by one draw
of torch's global generator, which the learner seeds per experience: runs repeat exactly. It
keeps nothing across experiences. A model with a frozen backbone (``finetune: head``) never
gets this plugin: the learner already trains its head alone, on cached features.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader

from clsim.precision import autocast


class LinearProbePlugin(SupervisedPlugin):
    def __init__(self, epochs: int = 20, lr: float = 1e-2, weight_decay: float = 0.01, batch_size: int = 16,
                 precision: str = "fp32", initial_head: dict | None = None):
        """``initial_head`` (``train.lp_when: new_head``): probe only while the head still holds
        these weights — its random initialisation — not once it has been trained."""
        super().__init__()
        self.initial_head = initial_head
        self.epochs, self.lr, self.weight_decay = int(epochs), float(lr), float(weight_decay)
        self.batch_size, self.precision = int(batch_size), precision
        self.seconds: list[float] = []  # per probed experience (part of the cost probe's train_seconds)

    def before_training_exp(self, strategy, **kwargs):
        if self.epochs == 0 or strategy.train_epochs == 0:
            return
        if self.initial_head is not None:
            now = strategy.model.head.state_dict()
            if not all(torch.equal(now[k].cpu(), v.cpu()) for k, v in self.initial_head.items()):
                return  # a head that has been trained: fine-tune from it
        t0 = time.perf_counter()
        X, y = self.features(strategy)
        self.fit(strategy.model.head, X, y)
        self.seconds.append(time.perf_counter() - t0)

    @torch.no_grad()
    def features(self, strategy) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features and labels of the experience's training data, from the backbone in eval mode."""
        model, ds = strategy.model, strategy.adapted_dataset
        order = sorted(range(len(ds)), key=lambda i: len(ds[i][0]))  # length-sorted: little padding
        loader = DataLoader(ds, batch_size=strategy.eval_mb_size, sampler=order, collate_fn=ds.collate_fn)
        was_training = model.training
        model.eval()
        xs, ys = [], []
        try:
            with autocast(strategy.device, self.precision):
                for x, y, *_ in loader:
                    xs.append(model.features(x.to(strategy.device)).float())
                    ys.append(y.to(strategy.device))
        finally:
            model.train(was_training)
        return torch.cat(xs), torch.cat(ys)

    def fit(self, head: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
        """``epochs`` epochs of AdamW on the head alone, shuffled by a seeded generator."""
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        opt = torch.optim.AdamW(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(y), generator=gen).split(self.batch_size):
                idx = idx.to(X.device)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(head(X[idx]), y[idx]).backward()
                opt.step()
        opt.zero_grad(set_to_none=True)
