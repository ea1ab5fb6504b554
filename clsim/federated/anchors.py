"""Where a federated client's EWC penalty is anchored (``federated.ewc_anchor``).

Avalanche's ``EWCPlugin`` keeps, per experience, the importances and the weights they were computed
at (its anchor): on a client, its own weights after its last round of that experience (``local``).
With ``global`` the anchor of the client's most recent experience is moved, once, to the global
model the client receives at its next experience's first round — the average of every client after
that experience's last round — keeping the importances computed at the local weights. The
trade-off (README, Strategies): a global anchor starts the next experience with no penalty, so
nothing pulls a client back toward its pre-averaging weights; a local one pairs the Fisher with the
point where it was computed.
"""
from __future__ import annotations

from avalanche.training.plugins import EWCPlugin
from avalanche.training.utils import copy_params_dict


def anchor_at_current_weights(strategy) -> int:
    """Move every EWC penalty's anchor for its latest experience to ``strategy.model``'s weights now
    (the global model just received); how many penalties moved (0: no EWC, or no experience yet)."""
    moved = 0
    for plugin in strategy.plugins:
        if isinstance(plugin, EWCPlugin) and plugin.saved_params:
            plugin.saved_params[max(plugin.saved_params)] = copy_params_dict(strategy.model)
            moved += 1
    return moved
