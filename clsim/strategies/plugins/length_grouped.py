"""Length-grouped batches (``train.group_by_length: true``) as an Avalanche plugin.

Dynamic padding pads each batch to its longest sequence, so batches of similar lengths waste
less work. This plugin swaps the template's training loader for one drawing indices from
transformers' ``LengthGroupedSampler`` (random mega-batches of 50 batches, or fewer on
small experiences, each sorted by length): still a random order of examples, but each batch
holds neighbours in length. It runs before the preset's plugins, so a plugin that brings
its own loader (``ReplayPlugin``'s ``ReplayDataLoader``) keeps it — replay batches are not
grouped.
"""
from __future__ import annotations

from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader
from transformers.trainer_pt_utils import LengthGroupedSampler


class LengthGroupedBatchesPlugin(SupervisedPlugin):
    def before_training_exp(self, strategy, **kwargs):
        ds = strategy.adapted_dataset
        lengths = [len(ds[i][0]) for i in range(len(ds))]
        # generator None: torch's global RNG, which the learner seeds per experience
        sampler = LengthGroupedSampler(strategy.train_mb_size, lengths=lengths)
        strategy.dataloader = DataLoader(ds, batch_size=strategy.train_mb_size, sampler=sampler,
                                         collate_fn=ds.collate_fn)
