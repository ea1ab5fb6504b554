"""A Flower server strategy's own state as tensors, for the server's checkpoint.

Flower strategies keep their state as attributes: FedAvgM's momentum and current arrays,
FedOpt's (FedAdam, FedYogi, FedAdagrad) ``m_t``/``v_t``. Every attribute holding arrays is
saved as tensors; the rest are the hyper-parameters it was built with, rebuilt from the preset.
"""
from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord


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
