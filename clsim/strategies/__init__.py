"""Strategies: a preset (template + plugins) turned into an Avalanche strategy on a model."""
from __future__ import annotations

import torch
from avalanche.training.plugins import EvaluationPlugin

from clsim.config import TrainConfig
from clsim.strategies.presets import ResolvedStrategy, available_presets, resolve

__all__ = ["ResolvedStrategy", "available_presets", "resolve", "build_strategy", "make_optimizer"]


def make_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with PyTorch's fused kernel (one pass over all parameters: on a 2-core CPU the
    per-tensor loop cost as much as the backward pass of MiniLM); the plain one where the
    fused kernel is unavailable. Same update rule either way."""
    try:
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)


def build_strategy(spec: ResolvedStrategy, model: torch.nn.Module, train: TrainConfig, device: str,
                   first_plugins: list = ()):
    """The Avalanche strategy for ``spec``; ``first_plugins`` run before the preset's plugins."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, train)
    from clsim.strategies.plugins import AutocastPlugin, LengthGroupedBatchesPlugin

    # speed options wrap every preset the same way; length grouping goes before the preset's
    # plugins so one that brings its own loader (replay) keeps it
    grouping = [LengthGroupedBatchesPlugin()] if train.group_by_length else []
    plugins = [*first_plugins, *grouping, *(c.build() for c in spec.plugins)]
    if train.precision != "fp32":
        plugins.append(AutocastPlugin(train.precision))
    return spec.template.cls(
        model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=train.batch_size, train_epochs=train.epochs, eval_mb_size=train.eval_batch_size,
        device=device, plugins=plugins, evaluator=EvaluationPlugin(loggers=[]), eval_every=-1,
        **spec.template.params,
    )
