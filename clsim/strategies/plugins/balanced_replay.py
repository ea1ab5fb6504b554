"""Replay with a choice of storage (``storage: experience | class``; ``strategies/replay.yaml``).

Avalanche's ``ReplayPlugin`` keeps ``mem_size`` training samples and, from the second experience
on, trains on batches that join ``batch_size`` current samples with as many drawn from the buffer
(so an experience trains on about twice the samples of naive). Its default storage is
``ExperienceBalancedBuffer``: the memory split equally over the experiences seen so far, each
share a reservoir sample of its experience — balanced over experiences, not over classes. Under
label-prior drift the buffer then mirrors each topic's skewed labels; ``storage: class`` swaps
in Avalanche's ``ClassBalancedBuffer`` (the memory split equally over the classes seen so far,
each share a reservoir sample of that class across the stream). Everything else is Avalanche's.
"""
from __future__ import annotations

from typing import Literal

from avalanche.training.plugins import ReplayPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer, ExperienceBalancedBuffer

STORAGE = {"experience": ExperienceBalancedBuffer, "class": ClassBalancedBuffer}


class BalancedReplayPlugin(ReplayPlugin):
    def __init__(self, mem_size: int = 200, storage: Literal["experience", "class"] = "experience",
                 batch_size: int | None = None, batch_size_mem: int | None = None):
        if storage not in STORAGE:
            raise ValueError(f"storage must be one of {sorted(STORAGE)}, got {storage!r}")
        self.storage = storage
        super().__init__(mem_size=mem_size, batch_size=batch_size, batch_size_mem=batch_size_mem,
                         storage_policy=STORAGE[storage](max_size=mem_size, adaptive_size=True))
