"""Evaluation: accuracy of a model on test splits; rows of the accuracy matrix R.

Batches are formed from length-sorted examples so dynamic padding wastes little work.
"""
from __future__ import annotations

import numpy as np
import torch

from clsim.models import PadCollate, TokenizedSplit


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: TokenizedSplit, batch_size: int, device: str, pad_id: int) -> float:
    if len(split.ids) == 0:
        return float("nan")
    collate = PadCollate(pad_id)
    order = np.argsort([len(x) for x in split.ids], kind="stable")
    correct = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x, y, _ = collate([(split.ids[i], split.labels[i], 0) for i in idx])
        pred = model(x.to(device)).argmax(-1).cpu()
        correct += int((pred == y).sum())
    return correct / len(split.ids)


def evaluate_row(model: torch.nn.Module, tests: list[TokenizedSplit], batch_size: int, device: str,
                 pad_id: int) -> list[float]:
    """One row of R: accuracy on every experience's test set, model left in its prior mode."""
    was_training = model.training
    model.eval()
    try:
        return [accuracy(model, t, batch_size, device, pad_id) for t in tests]
    finally:
        model.train(was_training)
