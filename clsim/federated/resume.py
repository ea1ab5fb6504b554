"""The server's half of a resumable federated run: what it checkpoints after every round.

After every round but the last, the ServerApp saves ``<run>/<strategy>/checkpoint.pt``
through :mod:`clsim.checkpoint` (atomic, weights_only):
the global arrays, the round reached, the Recorder's results so far, Python's ``random``
state (Flower samples clients with it) and the Flower strategy's own state. Clients keep
theirs next to it (:mod:`clsim.federated.state`). ``clsim run --resume`` restarts the
federation at the next round — mid-experience too, as clients restore their state from before
the experience every round — and the finished run has the same metrics as an uninterrupted one.

Flower strategies keep their state as attributes: FedAvgM's momentum and current arrays,
FedOpt's (FedAdam, FedYogi, FedAdagrad) ``m_t``/``v_t``. Every attribute holding arrays is
saved as tensors; the rest are the hyper-parameters it was built with, rebuilt from the preset.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord

from clsim import checkpoint


def _is_arrays(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, np.ndarray) for v in value)


def _is_array_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, np.ndarray) for v in value.values())


def server_strategy_state(strategy) -> dict:
    """The Flower strategy's array-valued attributes as ``{name: {"kind", "value"}}`` of tensors."""
    out = {}
    for name, value in vars(strategy).items():
        if isinstance(value, ArrayRecord):
            out[name] = {"kind": "record", "value": dict(value.to_torch_state_dict())}
        elif _is_array_dict(value):
            out[name] = {"kind": "dict", "value": {k: torch.from_numpy(np.array(v)) for k, v in value.items()}}
        elif _is_arrays(value):
            out[name] = {"kind": "list", "value": [torch.from_numpy(np.array(v)) for v in value]}
    return out


def load_server_strategy_state(strategy, state: dict) -> None:
    """Put :func:`server_strategy_state`'s attributes back on a freshly built strategy."""
    for name, entry in state.items():
        kind, value = entry["kind"], entry["value"]
        if kind == "record":
            setattr(strategy, name, ArrayRecord(value))
        elif kind == "dict":
            setattr(strategy, name, {k: t.numpy() for k, t in value.items()})
        else:
            setattr(strategy, name, [t.numpy() for t in value])


def save_round(out: Path, fingerprint: str, name: str, rnd: int, arrays: ArrayRecord, recorder, strategy) -> None:
    """The server's checkpoint after round ``rnd`` (``arrays``: the global model after it)."""
    checkpoint.save(out, {"fingerprint": fingerprint, "strategy": name, "round": rnd,
                          "arrays": dict(arrays.to_torch_state_dict()), "recorder": recorder.state_dict(),
                          "server": server_strategy_state(strategy), "random": random.getstate()})


def restore(saved: dict, strategy) -> ArrayRecord:
    """Put a :func:`save_round` checkpoint's strategy and sampling state back; the global arrays."""
    load_server_strategy_state(strategy, saved["server"])
    version, internal, gauss = saved["random"]
    random.setstate((version, tuple(internal), gauss))
    return ArrayRecord(saved["arrays"])
