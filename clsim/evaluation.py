"""Evaluation: accuracy of a model on test splits; rows of the accuracy matrix R."""
from __future__ import annotations

import numpy as np
import torch

from clsim.models import TokenizedSplit, pooled_features
from clsim.precision import autocast


def evaluate_row(model: torch.nn.Module, tests: list[TokenizedSplit], batch_size: int, device: str,
                 pad_id: int, precision: str = "fp32") -> list[float]:
    """One row of R: accuracy on every experience's test set, model left in its prior mode.

    The classifier is ``head(features(x))``, so this is the pooled features (length-sorted
    batches, see :func:`clsim.models.pooled_features`) fed to :func:`evaluate_features_row`.
    ``precision="bf16"`` evaluates under the same autocast as training (``train.precision``)."""
    features = [pooled_features(model, t.ids, batch_size, device, precision) for t in tests]
    return evaluate_features_row(model.head, features, [t.labels for t in tests], batch_size, device, precision)


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
