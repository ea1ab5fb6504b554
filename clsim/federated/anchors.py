"""Where a federated client's EWC penalty is anchored (``federated.ewc_anchor``).

Avalanche's ``EWCPlugin`` keeps, per experience, the importances and the weights they were computed
at (its anchor): on a client, its own weights after its last round of that experience (``local``).
With ``global`` the anchor of the client's most recent trained experience is moved, once, to the
global model the client receives at its next experience's first round — the average of every
client after that experience's last round — keeping the importances computed at the local weights.
Older experiences keep the anchors they had. The trade-off (README, Strategies): with a global
anchor the latest experience's penalty starts at zero for the backbone (LP-FT re-fits the head
before the first step, so the head's part is not zero), so the penalty does not pull a client back
toward its pre-averaging weights; a local anchor pairs the Fisher with the point where it was computed.
Either anchor holds only the parameters that train (``FrozenAnchorsPlugin``).
"""
from __future__ import annotations

from avalanche.training.plugins import EWCPlugin
from avalanche.training.utils import copy_params_dict

from clsim.strategies.plugins.frozen_anchors import drop_frozen


def anchor_at_current_weights(strategy, after: int) -> int | None:
    """Move the EWC penalty's anchor for its latest experience to ``strategy.model``'s weights now
    (the global model just received), unless that experience is not newer than ``after`` (already
    moved: a client that had no data for an experience trains nothing and keeps its latest key).
    The experience whose anchor moved, or None."""
    for plugin in strategy.plugins:
        latest = max(plugin.saved_params, default=-1) if isinstance(plugin, EWCPlugin) else -1
        if latest > after:
            plugin.saved_params[latest] = drop_frozen(copy_params_dict(strategy.model), strategy.model)
            return latest
    return None
