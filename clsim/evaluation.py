"""Evaluation: the model in service on every test set, as confusion matrices.

One row of results after each experience is a list of K x K confusion matrices (rows: true
label, columns: predicted), one per experience's test set. Accuracy, balanced accuracy, the
majority-class rate and everything else reported are functions of them (``clsim.metrics``), so a
collapse onto one class stays visible in the record.
"""
from __future__ import annotations

import numpy as np
import torch

from clsim.models import BottomCache, TokenizedSplit, pooled_features
from clsim.precision import autocast


def confusion_row(model: torch.nn.Module, tests: list[TokenizedSplit], n_labels: int, batch_size: int, device: str,
                  precision: str = "fp32", cache: BottomCache | None = None) -> list[np.ndarray]:
    """Confusion matrices of ``model`` on every test set, model left in its prior mode.

    The classifier is ``head(features(x))``, so this is the pooled features (length-sorted
    batches, see :func:`clsim.models.pooled_features`) fed to :func:`feature_confusion_row`.
    ``precision="bf16"`` evaluates under the same autocast as training (``train.precision``).
    ``cache`` keeps the frozen bottom's output on ``tests`` for the next evaluation."""
    keep = cache is not None and cache.prepare(model, batch_size, precision)
    features = [pooled_features(model, t.ids, batch_size, device, precision, cache.kept(i) if keep else None)
                for i, t in enumerate(tests)]
    return feature_confusion_row(model.head, features, [t.labels for t in tests], n_labels, batch_size, device,
                                 precision)


@torch.no_grad()
def feature_confusion_row(head: torch.nn.Module, features: list[torch.Tensor], labels: list[np.ndarray],
                          n_labels: int, batch_size: int, device: str, precision: str = "fp32") -> list[np.ndarray]:
    """Confusion matrices from cached pooled features (``head`` fine-tuning): the head alone decides."""
    was_training = head.training
    head.eval()
    try:
        row = []
        with autocast(device, precision):
            for X, y in zip(features, labels):
                pred = [head(X[k:k + batch_size].to(device)).argmax(-1).cpu() for k in range(0, len(y), batch_size)]
                pred = torch.cat(pred).numpy() if pred else np.zeros(0, dtype=np.int64)
                row.append(confusion(np.asarray(y), pred, n_labels))
        return row
    finally:
        head.train(was_training)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """K x K counts: ``C[t, p]`` = texts of label t predicted as p."""
    C = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(C, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return C
