"""Checkpoint files of one strategy run: explicit state dicts (``clsim.strategies.state``),
written atomically, read back with ``torch.load(weights_only=True)``.

After every finished experience a run saves ``<run>/<strategy>/checkpoint.pt``: its progress
(zero-shot row, the partial accuracy matrix R, how often it was resumed) and the learner's whole
continual-learning state — model and optimizer state dicts, the Avalanche clock, each plugin's
state, costs so far and the RNG states. Everything is plain containers of numbers, strings and
tensors, so loading runs no pickled code. Datasets (a replay buffer, the periodic re-fine-tune
window, Cumulative's union) are stored as sample ids into the tokenised stream, not as data.

The file is written to a temporary name in the same folder, fsynced and renamed over the old
one: a crash mid-write leaves the previous checkpoint intact. Once a strategy has finished, its
checkpoint shrinks to the final metrics document (nothing is left to resume).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from clsim.config import ConfigError
from clsim.sinks import atomic_write_bytes

FORMAT = 1
FILENAME = "checkpoint.pt"

class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: unreadable, another format, or from another run."""


# --------------------------------------------------------------------------- files
def path_for(strategy_dir: str | os.PathLike) -> Path:
    return Path(strategy_dir) / FILENAME


def save(strategy_dir: str | os.PathLike, state: dict) -> Path:
    """Atomically write ``state`` as ``<strategy_dir>/checkpoint.pt`` (temp file, fsync, rename)."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    return atomic_write_bytes(path_for(strategy_dir), buf.getvalue())


def load(strategy_dir: str | os.PathLike, fingerprint: str | None = None) -> dict | None:
    """The checkpoint in ``strategy_dir`` (None if there is none), checked against ``fingerprint``."""
    path = path_for(strategy_dir)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, never guess
        raise CheckpointError(path, None, f"unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(path, None, f"not a clsim checkpoint of format {FORMAT}")
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        raise CheckpointError(path, None, "made for a different scenario, strategy or data than this run's; "
                                          "resume with the scenario, presets and data the run was started with")
    return state


def fingerprint(scenario_data: dict, hparams: dict, tokens) -> str:
    """What a checkpoint belongs to: the resolved scenario, the strategy and the tokenised data."""
    h = hashlib.sha256()
    h.update(json.dumps([scenario_data, hparams], sort_keys=True, default=str).encode())
    for split in [*tokens.train, *tokens.test]:
        for ids in split.ids:
            h.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|")
        h.update(np.asarray(split.labels, dtype=np.int64).tobytes())
    return h.hexdigest()


