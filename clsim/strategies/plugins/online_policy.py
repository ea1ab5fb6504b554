"""When a strategy learns from a stream in the online protocol, and from what (``clsim.online``).

A preset names this plugin to choose its ``update`` policy:

- ``never`` — the model deployed on experience 0 serves the whole stream (``frozen``: the
  cost-free floor);
- ``batch`` — small steps on every labelled batch as its labels arrive (``online``; replay or
  EWC come from Avalanche's plugins next to it). A preset without this plugin does the same;
- ``periodic`` — every ``every`` time steps, re-fine-tune on the ``recent`` most recent labelled
  arrivals (``periodic_online``);
- ``drift`` — re-fine-tune on the same window when a river detector (``river.drift``'s ADWIN,
  KSWIN, PageHinkley, or the binary DDM / EDDM) alarms (``drift_refinetune``). ``signal: error``
  feeds it each labelled arrival's 0/1 error (of the prediction made when it arrived) as its
  label comes in; ``signal: confidence`` feeds each arrival's max softmax probability as it
  arrives — label-free, for when labels are late or scarce. Alarms in the first ``warmup``
  steps, or within ``cooldown`` steps of the last re-fine-tune, are recorded but not acted on;
  after a re-fine-tune the detector starts afresh (the model it watched is gone).

A re-fine-tune is the scenario's full recipe (linear probe, warmup and decay, ``epochs``) from
the model in service (``start: current``) or from the pretrained weights and initial head
(``start: pretrained``), with the optimizer state cleared. The detector is checkpointed as the
values it was fed since it last started: replaying them into a fresh detector (KSWIN seeded)
gives the same detector, and a checkpoint holds no pickled object.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Annotated, Literal

from avalanche.core import SupervisedPlugin
from pydantic import Field


def make_detector(name: str, params: dict | None = None):
    """A fresh river detector (KSWIN seeded 0 unless ``params`` say otherwise)."""
    import river.drift  # here: river takes seconds to import, and only drift-triggered strategies need it
    import river.drift.binary

    params = dict(params or {})
    if name == "KSWIN":
        params.setdefault("seed", 0)
    module = river.drift.binary if name in ("DDM", "EDDM") else river.drift
    return getattr(module, name)(**params)


class OnlinePolicyPlugin(SupervisedPlugin):
    # the annotations are what `clsim validate` checks a preset's values against
    def __init__(self, update: Literal["never", "batch", "periodic", "drift"] = "batch",
                 every: Annotated[int, Field(ge=1)] = 20,
                 detector: Literal["ADWIN", "KSWIN", "PageHinkley", "DDM", "EDDM"] = "ADWIN",
                 signal: Literal["error", "confidence"] = "error",
                 detector_params: dict | None = None,
                 recent: Annotated[int, Field(ge=1)] = 320,
                 start: Literal["pretrained", "current"] = "current",
                 warmup: Annotated[int, Field(ge=0)] = 0,
                 cooldown: Annotated[int, Field(ge=0)] = 0):
        super().__init__()
        if update not in ("never", "batch", "periodic", "drift") or start not in ("pretrained", "current"):
            raise ValueError(f"update must be never, batch, periodic or drift and start pretrained or current, "
                             f"got {update!r}, {start!r}")
        if signal == "confidence" and detector in ("DDM", "EDDM"):
            raise ValueError(f"{detector} watches a binary error; it cannot take signal: confidence")
        self.update, self.every, self.recent, self.start = update, int(every), int(recent), start
        self.detector_name, self.signal, self.detector_params = detector, signal, dict(detector_params or {})
        self.warmup, self.cooldown = int(warmup), int(cooldown)
        self.fed: list[float] = []  # what the detector has seen since it (re)started
        self.last_refit = -1  # time step of the last re-fine-tune (-1: none)
        self.initial_state: dict | None = None  # start: pretrained — the weights before any training
        self.refitting = False  # set by the online trainer around a re-fine-tune
        self.detector = make_detector(detector, self.detector_params) if update == "drift" else None

    # ------------------------------------------------------------------ the policy
    @property
    def refits(self) -> bool:
        return self.update in ("periodic", "drift")

    def observe(self, values) -> bool:
        """Feed the detector; True when it signalled a drift on any of ``values``."""
        alarm = False
        for v in values:
            v = float(v)
            self.detector.update(bool(v) if self.detector_name in ("DDM", "EDDM") else v)
            self.fed.append(v)
            alarm = alarm or bool(self.detector.drift_detected)
        return alarm

    def wants_refit(self, step: int, alarm: bool) -> bool:
        """Whether to re-fine-tune after serving step ``step`` (``alarm``: the detector's verdict)."""
        if self.update == "periodic":
            return (step + 1) % self.every == 0
        if self.update == "drift":
            cooled = self.last_refit < 0 or step - self.last_refit >= self.cooldown
            return alarm and step >= self.warmup and cooled
        return False

    def refitted(self, step: int) -> None:
        """A re-fine-tune happened after ``step``: the detector starts afresh on the new model."""
        self.last_refit = step
        if self.detector is not None:
            self.detector, self.fed = make_detector(self.detector_name, self.detector_params), []

    # ------------------------------------------------------------------ Avalanche hooks
    def before_training(self, strategy, **kwargs):
        if self.start == "pretrained" and self.initial_state is None:  # the first call: the deployment fit
            self.initial_state = copy.deepcopy({k: v.detach().cpu() for k, v in strategy.model.state_dict().items()})

    def before_training_exp(self, strategy, **kwargs):
        if self.refitting:
            if self.start == "pretrained":
                strategy.model.load_state_dict(self.initial_state)
            strategy.optimizer.state = defaultdict(dict)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"fed": list(self.fed), "last_refit": self.last_refit, "initial_state": self.initial_state}

    def load_state_dict(self, state: dict) -> None:
        self.last_refit = int(state["last_refit"])
        self.initial_state = None if state["initial_state"] is None else dict(state["initial_state"])
        if self.detector is not None:
            self.detector, self.fed = make_detector(self.detector_name, self.detector_params), []
            self.observe(state["fed"])
