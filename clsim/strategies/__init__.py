"""Strategies: a checked ``StrategyPlan`` (template + plugins) built into an Avalanche strategy.

What Avalanche lacks is one plugin file in ``clsim.strategies.plugins``; ``state`` saves and
restores every plugin's continual-learning state as explicit state dicts.
"""
from __future__ import annotations

import importlib

import torch
from avalanche.training.plugins import EvaluationPlugin, EWCPlugin

from clsim.config import Component, StrategyPlan, TrainConfig
from clsim.strategies.plugins import (
    AutocastPlugin,
    CalibrationPlugin,
    EarlyStoppingPlugin,
    FrozenAnchorsPlugin,
    LengthGroupedBatchesPlugin,
    LinearProbePlugin,
    WarmupSchedulePlugin,
)

__all__ = ["build_strategy", "build", "make_optimizer"]


def build(component: Component, **extra):
    """The object a plan's component names (its class imported now), with its checked arguments."""
    cls = getattr(importlib.import_module(component.module), component.cls)
    return cls(**component.params, **extra)


def make_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with PyTorch's fused kernel (one pass over all parameters: on a 2-core CPU the
    per-tensor loop cost as much as the backward pass of MiniLM); the plain one where the
    fused kernel is unavailable. Same update rule either way."""
    try:
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)


def recipe_plugins(model: torch.nn.Module, train: TrainConfig, score=None) -> list:
    """The training recipe every preset gets (``TrainConfig``): the linear probe before each
    experience's fine-tuning — unless the backbone is frozen (``finetune: head``: the learner
    already trains the head alone, on cached features) —, early stopping after it (``patience``;
    ``score``: experience index -> validation accuracy) and the warmup/decay schedule."""
    probe = train.lp_epochs > 0 and getattr(model, "backbone_frozen", True) is False
    initial = None
    if probe and train.lp_when == "new_head":  # the head the model was built with (a Flower client's
        # model keeps it as ``initial_head``: global arrays are loaded over it before this runs)
        initial = getattr(model, "initial_head", None) or {k: v.detach().clone()
                                                           for k, v in model.head.state_dict().items()}
    return [*([LinearProbePlugin(train.lp_epochs, train.lp_lr, train.weight_decay, train.batch_size,
                                 train.precision, initial_head=initial)] if probe else []),
            *([EarlyStoppingPlugin(train.patience, score)] if train.patience else []),
            WarmupSchedulePlugin(train.warmup, train.schedule)]


def build_strategy(spec: StrategyPlan, model: torch.nn.Module, train: TrainConfig, device: str,
                   first_plugins: list = (), score=None, val=None):
    """The Avalanche strategy for ``spec`` trained as ``train`` says (``score``: validation accuracy
    of experience i, for early stopping; ``val``: its validation features and labels, for bias
    calibration); ``first_plugins`` and the calibration run before the preset's plugins (EWC's
    anchor, LwF's teacher, replay's buffer are taken after calibration), the recipe's after them
    (they must see a periodic reset, a from-scratch reset, replay's loader and the epoch count the
    preset's plugins set)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, train)
    # speed options wrap every preset the same way; length grouping goes before the preset's
    # plugins so one that brings its own loader (replay) keeps it
    grouping = [LengthGroupedBatchesPlugin()] if train.group_by_length else []
    preset = [build(c) for c in spec.plugins]
    # EWC without its frozen parameters' zero terms: the same penalty, computed on a third of MiniLM
    frozen = [FrozenAnchorsPlugin()] if any(isinstance(p, EWCPlugin) for p in preset) else []
    calibration = [CalibrationPlugin(val, train.calibrate)] if train.calibrate != "none" else []
    plugins = [*first_plugins, *calibration, *grouping, *preset, *frozen, *recipe_plugins(model, train, score)]
    if train.precision != "fp32":
        plugins.append(AutocastPlugin(train.precision))
    return build(spec.template, model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
                 train_mb_size=train.batch_size, train_epochs=train.epochs, eval_mb_size=train.eval_batch_size,
                 device=device, plugins=plugins, evaluator=EvaluationPlugin(loggers=[]), eval_every=-1)
