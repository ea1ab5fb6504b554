"""EWC anchored only at the parameters that train: the same penalty, without its exact zeros.

Avalanche's ``EWCPlugin`` copies *every* parameter as an experience's anchor and, at every step,
adds one term per anchored parameter and earlier experience (``mode: separate``). A frozen
parameter (``finetune: partial``'s embeddings and lowest layers: about two thirds of MiniLM's
weights) never moves and has zero importance, so each of its terms is an exact 0.0 — and computing
them was most of EWC's extra step time, growing with every experience. The penalty skips a
parameter its anchor lacks, so this plugin keeps only the trainable ones in the anchor: the loss,
its gradient and every number stay bit for bit the same (``tests/test_strategies.py``).
"""
from __future__ import annotations

from avalanche.training.plugins import EWCPlugin, SupervisedPlugin


def drop_frozen(anchor: dict, model) -> dict:
    """``anchor`` (an EWC anchor: parameter name -> copy) without the parameters of ``model`` that
    do not train."""
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in anchor.items() if k in trainable}


class FrozenAnchorsPlugin(SupervisedPlugin):
    """Runs after the EWC plugins of a strategy: drops frozen parameters from the anchor each one
    has just taken. Importances are left as Avalanche keeps them (``mode: online`` folds them
    into the next experience's, key by key)."""

    def after_training_exp(self, strategy, **kwargs):
        for plugin in strategy.plugins:
            if isinstance(plugin, EWCPlugin) and plugin.saved_params:
                latest = max(plugin.saved_params)
                plugin.saved_params[latest] = drop_frozen(plugin.saved_params[latest], strategy.model)
