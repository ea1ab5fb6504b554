"""A strategy's continual-learning state as explicit state dicts — what a checkpoint holds.

Avalanche's stateful plugins (replay, EWC, LwF) and clsim's own have adapters in ``ADAPTERS``; a
plugin class not listed may implement ``state_dict()`` / ``load_state_dict()``; any other plugin
is treated as stateless (its name is recorded). Everything is plain containers of numbers,
strings and tensors, so loading runs no pickled code. Datasets (a replay buffer, the periodic
re-fine-tune window, Cumulative's union) are stored as sample ids into the tokenised stream,
not as data: ``encode`` / ``decode`` map between the two. The same state serves a central
run's checkpoint and a Flower client's state between rounds.
"""
from __future__ import annotations

import copy
import random
from collections import defaultdict
from typing import Any, Callable

import numpy as np
import torch
from avalanche.training import Cumulative
from avalanche.training.storage_policy import ClassBalancedBuffer, ExperienceBalancedBuffer, ReservoirSamplingBuffer
from avalanche.training.utils import ParamData

from clsim.config import ConfigError

Encode = Callable[[Any], torch.Tensor]  # an Avalanche dataset -> its sample ids
Decode = Callable[[torch.Tensor], Any]  # sample ids -> an Avalanche dataset


class StateError(ConfigError):
    """A saved state that does not fit the strategy it is loaded into."""


# --------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    """Python, NumPy and torch generator states as weights_only-loadable values."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- plugin adapters
def _groups(sp, enc: Encode) -> list[dict]:
    """A balanced buffer's reservoirs, in the buffer's order (the order replay batches draw from)."""
    return [{"key": int(k), "max_size": g.max_size, "ids": enc(g.buffer), "weights": g._buffer_weights.detach().clone()}
            for k, g in sp.buffer_groups.items()]


def _replay(plugin, enc: Encode) -> dict:
    sp = plugin.storage_policy
    if type(sp) is ExperienceBalancedBuffer:
        return {"storage": "experience", "num_exps": sp._num_exps, "max_size": sp.max_size, "groups": _groups(sp, enc)}
    if type(sp) is ClassBalancedBuffer:
        return {"storage": "class", "seen_classes": sorted(int(c) for c in sp.seen_classes), "max_size": sp.max_size,
                "groups": _groups(sp, enc)}
    raise StateError(None, f"{type(plugin).__name__}.storage_policy",
                     f"{type(sp).__name__} cannot be checkpointed; use ExperienceBalancedBuffer or ClassBalancedBuffer")


def _load_replay(plugin, state: dict, dec: Decode, strategy) -> None:
    sp = plugin.storage_policy
    kind = state.get("storage", "experience")  # checkpoints before class storage existed held experience buffers
    want = {"experience": ExperienceBalancedBuffer, "class": ClassBalancedBuffer}[kind]
    if type(sp) is not want:
        raise StateError(None, f"{type(plugin).__name__}.storage_policy",
                         f"checkpoint holds a {want.__name__}; this strategy has a {type(sp).__name__}")
    sp.max_size = state["max_size"]
    if kind == "experience":
        sp._num_exps = state["num_exps"]
    else:
        sp.seen_classes = set(state["seen_classes"])
    sp.buffer_groups = {}
    for g in state["groups"]:
        buf = ReservoirSamplingBuffer(g["max_size"])
        buf.buffer, buf._buffer_weights = dec(g["ids"]), g["weights"]
        sp.buffer_groups[g["key"]] = buf


def _params(d: dict) -> dict:
    return {int(e): {k: p.data.detach().clone() for k, p in ps.items()} for e, ps in d.items()}


def _ewc(plugin, enc: Encode) -> dict:
    return {"saved_params": _params(plugin.saved_params), "importances": _params(plugin.importances)}


def _load_ewc(plugin, state: dict, dec: Decode, strategy) -> None:
    def back(d: dict) -> defaultdict:
        return defaultdict(dict, {e: {k: ParamData(k, init_tensor=t.to(strategy.device), device=strategy.device)
                                      for k, t in ps.items()} for e, ps in d.items()})

    plugin.saved_params, plugin.importances = back(state["saved_params"]), back(state["importances"])


def _lwf(plugin, enc: Encode) -> dict:
    lwf = plugin.lwf
    prev = lwf.prev_model
    return {"expcount": lwf.expcount,
            "prev_classes_by_task": {int(t): sorted(int(c) for c in cs) for t, cs in lwf.prev_classes_by_task.items()},
            "prev_model": None if prev is None else prev.state_dict(),
            "prev_model_training": bool(prev is not None and prev.training)}


def _load_lwf(plugin, state: dict, dec: Decode, strategy) -> None:
    lwf = plugin.lwf
    lwf.expcount = state["expcount"]
    lwf.prev_classes_by_task = defaultdict(set, {t: set(cs) for t, cs in state["prev_classes_by_task"].items()})
    lwf.prev_model = None
    if state["prev_model"] is not None:  # the teacher has the student's architecture
        teacher = copy.deepcopy(strategy.model)
        teacher.load_state_dict(state["prev_model"])
        lwf.prev_model = teacher.train(state["prev_model_training"])


def _from_scratch(plugin, enc: Encode) -> dict:
    weights = plugin.initial_weights
    return {"initial_weights": None if weights is None else {k: v.detach().cpu() for k, v in weights.items()}}


def _load_from_scratch(plugin, state: dict, dec: Decode, strategy) -> None:
    weights = state["initial_weights"]
    plugin.initial_weights = None if weights is None else {k: v.to(strategy.device) for k, v in weights.items()}


def _periodic(plugin, enc: Encode) -> dict:
    return {"initial_state": plugin.initial_state, "history": [enc(d) for d in plugin.history],
            "refits": list(plugin.refits)}


def _load_periodic(plugin, state: dict, dec: Decode, strategy) -> None:
    plugin.initial_state = None if state["initial_state"] is None else dict(state["initial_state"])
    plugin.history = [dec(ids) for ids in state["history"]]
    plugin.refits = list(state["refits"])


PROBE_FIELDS = ("train_seconds", "samples", "loss", "reg_ratio")


def _probe(plugin, enc: Encode) -> dict:
    return {f: list(getattr(plugin, f)) for f in PROBE_FIELDS}


def _load_probe(plugin, state: dict, dec: Decode, strategy) -> None:
    for f in PROBE_FIELDS:
        setattr(plugin, f, list(state[f]))


CLOCK_FIELDS = ("train_iterations", "train_exp_counter", "train_exp_epochs", "train_exp_iterations",
                "train_epoch_iterations", "total_iterations")


def _clock(plugin, enc: Encode) -> dict:
    return {f: int(getattr(plugin, f)) for f in CLOCK_FIELDS}


def _load_clock(plugin, state: dict, dec: Decode, strategy) -> None:
    for f in CLOCK_FIELDS:
        setattr(plugin, f, state[f])


# class name -> (state of a plugin, restore a plugin); transient plugins map to None.
ADAPTERS: dict[str, tuple | None] = {
    "ReplayPlugin": (_replay, _load_replay),
    "BalancedReplayPlugin": (_replay, _load_replay),
    "EWCPlugin": (_ewc, _load_ewc),
    "LwFPlugin": (_lwf, _load_lwf),
    "EvalTeacherLwFPlugin": (_lwf, _load_lwf),
    "FromScratchTrainingPlugin": (_from_scratch, _load_from_scratch),
    "PeriodicRefinetunePlugin": (_periodic, _load_periodic),
    "ProbePlugin": (_probe, _load_probe),
    "Clock": (_clock, _load_clock),
    "LinearProbePlugin": None,  # features and head optimizer live within one experience
    "FrozenAnchorsPlugin": None,  # trims EWC's anchor when it is taken; EWC's adapter saves the result
    "WarmupSchedulePlugin": None,  # the schedule is rebuilt at every experience
    "EvaluationPlugin": None,  # clsim evaluates itself; Avalanche's evaluator logs nothing
    "PeriodicEval": None,  # eval_every=-1: flags reset at every train call
}


def _plugin_state(plugin, enc: Encode) -> dict | None:
    name = type(plugin).__name__
    if name in ADAPTERS:
        adapter = ADAPTERS[name]
        return None if adapter is None else adapter[0](plugin, enc)
    if hasattr(plugin, "state_dict") and hasattr(plugin, "load_state_dict"):
        return plugin.state_dict()
    return None


def _load_plugin_state(plugin, state: dict | None, dec: Decode, strategy) -> None:
    if state is None:
        return
    name = type(plugin).__name__
    if ADAPTERS.get(name) is not None:
        ADAPTERS[name][1](plugin, state, dec, strategy)
    else:
        plugin.load_state_dict(state)


def strategy_state(strategy, enc: Encode) -> dict:
    """The Avalanche strategy's CL state: every plugin (in order) and template extras."""
    plugins = [{"class": type(p).__name__, "state": _plugin_state(p, enc)} for p in strategy.plugins]
    extras = {}
    if isinstance(strategy, Cumulative):  # the union of every experience seen so far
        extras["dataset"] = None if strategy.dataset is None else enc(strategy.dataset)
    return {"template": type(strategy).__name__, "plugins": plugins, "extras": extras}


def _stateless(name: str) -> bool:
    """A plugin that holds nothing between experiences (its adapter is None)."""
    return name in ADAPTERS and ADAPTERS[name] is None


def load_strategy_state(strategy, state: dict, dec: Decode) -> None:
    """Restore what :func:`strategy_state` saved into a freshly built strategy of the same preset.
    Plugins that hold no state are not matched: a checkpoint taken before one was added (or after
    one was removed) still restores every plugin that has state."""
    plugins = [p for p in strategy.plugins if not _stateless(type(p).__name__)]
    entries = [e for e in state["plugins"] if not _stateless(e["class"])]
    found, saved = [type(p).__name__ for p in plugins], [e["class"] for e in entries]
    if found != saved or type(strategy).__name__ != state["template"]:
        raise StateError(None, "strategy", f"checkpoint holds {state['template']} with plugins {saved}; "
                                                f"this strategy is {type(strategy).__name__} with {found}")
    for plugin, entry in zip(plugins, entries):
        _load_plugin_state(plugin, entry["state"], dec, strategy)
    if "dataset" in state["extras"]:
        ids = state["extras"]["dataset"]
        strategy.dataset = None if ids is None else dec(ids)
