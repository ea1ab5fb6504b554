"""A client's continual-learning state <-> Flower's ``context.state``.

A ClientApp is called afresh for every message, so what a CL strategy carries from one
experience to the next — the replay buffer, EWC's importances and anchor weights, LwF's
previous model, Avalanche's clock, Cumulative's union of data — is saved into
``context.state`` after each round and restored before the next, as the same explicit
state dicts a checkpoint holds (see :mod:`clsim.checkpoint`).

Rounds and experiences differ: an experience may last several rounds. Every round restores
``base`` — the state from before the client's current experience — trains, and keeps the
result as ``latest``; when the client moves on to its next experience, ``latest`` becomes
the new ``base``. So the replay buffer gains each experience once, and EWC computes one
importance per experience, however many rounds it took.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from flwr.app import ConfigRecord, RecordDict

from clsim import checkpoint

KEY = "clsim.cl_state"


def dump_strategy(learner) -> bytes:
    """The learner's CL state as bytes: the same explicit state dicts as a checkpoint
    (:func:`clsim.checkpoint.strategy_state`; buffers stored as sample ids)."""
    buf = io.BytesIO()
    torch.save(checkpoint.strategy_state(learner.strategy, learner.encode), buf)
    return buf.getvalue()


def load_strategy(learner, blob: bytes) -> None:
    """Restore :func:`dump_strategy`'s bytes into a freshly built learner of the same preset.
    Costs are per round, so the probe starts empty."""
    state = torch.load(io.BytesIO(blob), weights_only=True)
    checkpoint.load_strategy_state(learner.strategy, state, learner.decode)
    learner.probe.__init__(learner.probe.on_batch)


@dataclass
class ClientState:
    """The client's position in its stream and its CL state around the current experience."""

    experience: int = -1  # the client experience ``latest`` was trained on (-1: none yet)
    rounds: int = 0  # training rounds this client has completed
    base: bytes = b""  # CL state before ``experience`` (empty: fresh strategy)
    latest: bytes = b""  # CL state after the last round on ``experience``

    def start_round(self, experience: int) -> bytes:
        """Move to ``experience`` if the client advanced; the state to train this round from."""
        if experience != self.experience:
            if self.experience >= 0:
                self.base = self.latest
            self.experience = experience
        return self.base

    def finish_round(self, latest: bytes) -> None:
        self.latest = latest
        self.rounds += 1

    def save(self, state: RecordDict) -> None:
        state[KEY] = ConfigRecord({"experience": self.experience, "rounds": self.rounds,
                                   "base": self.base, "latest": self.latest})

    @classmethod
    def load(cls, state: RecordDict) -> "ClientState":
        if KEY not in state:
            return cls()
        rec = state[KEY]
        return cls(int(rec["experience"]), int(rec["rounds"]), bytes(rec["base"]), bytes(rec["latest"]))
