"""A client's continual-learning state <-> Flower's ``context.state``.

A ClientApp is called afresh for every message, so what a CL strategy carries from one
experience to the next — the replay buffer, EWC's importances and anchor weights, LwF's
previous model, Avalanche's clock, Cumulative's union of data — is saved into
``context.state`` after each round and restored before the next. The state lives in the
strategy's plugins (and, for Cumulative, the template's ``dataset``); their attributes are
pickled, so any preset works without clsim knowing its internals.

Rounds and experiences differ: an experience may last several rounds. Every round restores
``base`` — the state from before the client's current experience — trains, and keeps the
result as ``latest``; when the client moves on to its next experience, ``latest`` becomes
the new ``base``. So the replay buffer gains each experience once, and EWC computes one
importance per experience, however many rounds it took.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass

import torch
from flwr.app import ConfigRecord, RecordDict

KEY = "clsim.cl_state"
TEMPLATE_STATE = ("dataset",)  # template attributes that are CL state (Cumulative's union)


def _persisted(strategy, skip: tuple[type, ...]) -> list:
    """The plugins whose attributes are CL state: all but the per-round ones in ``skip``."""
    from avalanche.training.plugins import EvaluationPlugin

    return [p for p in strategy.plugins if not isinstance(p, (EvaluationPlugin, *skip))]


def dump_strategy(strategy, skip: tuple[type, ...] = ()) -> bytes:
    """The strategy's CL state as bytes (plugin attributes by position, plus template state)."""
    plugins = _persisted(strategy, skip)
    data = {"plugins": [(type(p).__name__, vars(p)) for p in plugins],
            "template": {a: getattr(strategy, a) for a in TEMPLATE_STATE if hasattr(strategy, a)}}
    buf = io.BytesIO()
    torch.save(data, buf, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    return buf.getvalue()


def load_strategy(strategy, blob: bytes, skip: tuple[type, ...] = ()) -> None:
    """Restore what :func:`dump_strategy` saved into a freshly built strategy of the same preset."""
    data = torch.load(io.BytesIO(blob), weights_only=False)
    plugins = _persisted(strategy, skip)
    names = [type(p).__name__ for p in plugins]
    saved = [name for name, _ in data["plugins"]]
    if names != saved:
        raise ValueError(f"saved CL state is for plugins {saved}, this strategy has {names}")
    for plugin, (_, attrs) in zip(plugins, data["plugins"]):
        plugin.__dict__.update(attrs)
    for attr, value in data["template"].items():
        setattr(strategy, attr, value)


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
