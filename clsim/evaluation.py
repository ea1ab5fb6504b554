"""Evaluation: accuracy of a model on test splits; rows of the accuracy matrix R.

Batches are formed from length-sorted examples so dynamic padding wastes little work.
"""
from __future__ import annotations

import numpy as np
import torch

from clsim.models import PadCollate, TokenizedSplit
from clsim.precision import autocast


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
                 pad_id: int, precision: str = "fp32") -> list[float]:
    """One row of R: accuracy on every experience's test set, model left in its prior mode.

    ``precision="bf16"`` evaluates under the same autocast as training (``train.precision``)."""
    was_training = model.training
    model.eval()
    try:
        with autocast(device, precision):
            return [accuracy(model, t, batch_size, device, pad_id) for t in tests]
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_features_row(head: torch.nn.Module, features: list[torch.Tensor], labels: list[np.ndarray],
                          batch_size: int, device: str, precision: str = "fp32") -> list[float]:
    """One row of R from cached pooled features (``head`` fine-tuning): the head alone decides."""
    was_training = head.training
    head.eval()
    try:
        row = []
        with autocast(device, precision):
            for X, y in zip(features, labels):
                if len(y) == 0:
                    row.append(float("nan"))
                    continue
                pred = torch.cat([head(X[k:k + batch_size].to(device)).argmax(-1).cpu()
                                  for k in range(0, len(y), batch_size)])
                row.append(int((pred == torch.as_tensor(y)).sum()) / len(y))
        return row
    finally:
        head.train(was_training)
