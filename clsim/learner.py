"""The learner: one strategy on one tokenised stream — the same code centrally, in a Ray
actor, and inside a Flower ClientApp.

This is the single place where token sequences meet Avalanche: each experience becomes an
Avalanche classification dataset of ``(input_ids, label, task)`` items whose collate pads to
the longest sequence in the batch. The model takes ``input_ids`` alone, so Avalanche's
templates and plugins run unchanged (no custom template subclass).
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import DataAttribute, concat_datasets
from avalanche.benchmarks.utils.classification_dataset import TaskAwareClassificationDataset
from torch.utils.data import Dataset

from clsim import metrics as M
from clsim.config import ConfigError, Scenario, StrategyPlan
from clsim.evaluation import confusion_row, feature_confusion_row
from clsim.models import (
    BottomCache,
    FeatureHead,
    PadCollate,
    TokenizedSplit,
    TokenizedStream,
    build_model,
    pooled_features,
    trainable_parameters,
    weights_digest,
)
from clsim.strategies import build_strategy
from clsim.strategies import state as cl_state
from clsim.strategies.plugins import CalibrationPlugin, EarlyStoppingPlugin, ProbePlugin


class _TokenDataset(Dataset):
    def __init__(self, split: TokenizedSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.ids)

    def __getitem__(self, i):
        return self.split.ids[i], int(self.split.labels[i])


def _classification_dataset(base: Dataset, labels, collate) -> TaskAwareClassificationDataset:
    """``base`` items ``(x, y)`` as an Avalanche classification dataset (targets + task 0)."""
    return TaskAwareClassificationDataset(
        [base],
        data_attributes=[
            DataAttribute([int(y) for y in labels], "targets"),
            DataAttribute([0] * len(labels), "targets_task_labels", use_in_getitem=True),
        ],
        collate_fn=collate,
    )


def to_avalanche(split: TokenizedSplit, pad_id: int) -> TaskAwareClassificationDataset:
    """Token sequences with dynamic padding."""
    return _classification_dataset(_TokenDataset(split), split.labels, PadCollate(pad_id))


class _FeatureDataset(Dataset):
    def __init__(self, features: torch.Tensor, labels: np.ndarray):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.features[i], int(self.labels[i])


def stack_collate(batch):
    xs, ys, ts = zip(*batch)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long), torch.as_tensor(ts, dtype=torch.long)


def features_to_avalanche(features: torch.Tensor, labels: np.ndarray) -> TaskAwareClassificationDataset:
    """Cached pooled features (``head`` fine-tuning)."""
    return _classification_dataset(_FeatureDataset(features, labels), labels, stack_collate)


def with_sample_ids(train: list[TaskAwareClassificationDataset]) -> list[TaskAwareClassificationDataset]:
    """Tag every training sample with its position in the whole stream (``sample_ids``), so a replay
    buffer or a training window can be checkpointed as ids and rebuilt from the same stream."""
    out, offset = [], 0
    for d in train:
        ids = DataAttribute(list(range(offset, offset + len(d))), "sample_ids")
        out.append(d.update_data_attribute("sample_ids", ids))
        offset += len(d)
    return out


def deterministic_mode() -> None:
    """Repeatable kernels where torch has them (warn, do not fail, where an op has none); with
    per-experience seeding this makes (scenario, seed) give the same metrics run after run."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when a GPU is visible, else cpu; asking for cuda without one is a ConfigError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(None, "--device", "cuda requested but no CUDA device is visible")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Learner:
    """Builds model + strategy for ``spec`` and trains/evaluates experience by experience.

    With ``finetune: head`` the backbone is a fixed feature extractor, so (``cache_features``)
    its pooled features are computed once per split and the strategy trains ``FeatureHead``
    on them — the same head, the same batches, none of the repeated backbone passes.
    ``self.model`` is always the full classifier.
    """

    scenario: Scenario
    spec: StrategyPlan
    tokens: TokenizedStream
    device: str = "cpu"
    on_batch: object = None
    eval_seconds: list[float] = field(default_factory=list)
    cache_features: bool = True
    model: object = None  # a model of this scenario to use instead of building one (a federated client's, reused)
    feature_seconds: float = 0.0  # time spent computing cached features (part of the training cost)
    _all_train: object = field(default=None, init=False, repr=False)  # lazily, for decode()
    _last_eval: tuple | None = field(default=None, init=False, repr=False)  # (weights version, confusion row)
    _bottom: BottomCache = field(default_factory=BottomCache, init=False, repr=False)  # kept on the test sets

    def __post_init__(self):
        seed_everything(self.scenario.seed)
        if self.model is None:
            self.model = build_model(self.scenario.model, len(self.tokens.label_names), self.scenario.seed)
        self.probe = ProbePlugin(self.on_batch)
        self.cached = self.cache_features and self.model.backbone_frozen
        stopping = self.spec.train.patience > 0  # checked against the stream by config.plan
        reads_val = stopping or self.spec.train.calibrate != "none"
        if self.cached:
            t0 = time.perf_counter()
            self.model.to(self.device)
            feats = lambda split: pooled_features(  # noqa: E731
                self.model, split.ids, self.spec.train.eval_batch_size, self.device,
                self.spec.train.precision)
            self.train_features = [feats(s) for s in self.tokens.train]
            self.test_features = [feats(s) for s in self.tokens.test]
            self.val_features = [feats(s) for s in self.tokens.val] if reads_val else []
            trained = FeatureHead(self.model.head)
            train = [features_to_avalanche(f, s.labels) for f, s in zip(self.train_features, self.tokens.train)]
            test = [features_to_avalanche(f, s.labels) for f, s in zip(self.test_features, self.tokens.test)]
            self.feature_seconds = time.perf_counter() - t0
        else:
            trained = self.model
            train = [to_avalanche(s, self.tokens.pad_id) for s in self.tokens.train]
            test = [to_avalanche(s, self.tokens.pad_id) for s in self.tokens.test]
        train = with_sample_ids(train)  # checkpoints store buffers as ids into the stream
        self.strategy = build_strategy(self.spec, trained, self.spec.train, self.device, [self.probe],
                                       score=self.val_accuracy if stopping else None,
                                       val=self.val_data if reads_val else None)
        # with_task_labels: experiences expose task labels, so Avalanche's loaders use our collate
        self.benchmark = with_task_labels(benchmark_from_datasets(train=train, test=test))

    @property
    def trainable_params(self) -> int:
        return trainable_parameters(self.model)

    def plugin(self, cls: type):
        """The strategy's plugin of type ``cls`` (e.g. to inspect a replay buffer), or None."""
        return next((p for p in self.strategy.plugins if isinstance(p, cls)), None)

    # ------------------------------------------------------------------ checkpoints
    def encode(self, dataset) -> torch.Tensor:
        """A dataset drawn from this stream's training data -> its sample ids (order kept)."""
        return torch.as_tensor(list(dataset.sample_ids), dtype=torch.long)

    def decode(self, ids: torch.Tensor):
        """Sample ids -> the same samples, in the same order, as one Avalanche dataset."""
        if self._all_train is None:
            self._all_train = concat_datasets([e.dataset for e in self.benchmark.train_stream])
        return self._all_train.subset(ids.tolist())

    def state_dict(self) -> dict:
        """The whole CL state as explicit state dicts (see clsim.strategies.state): model, optimizer,
        Avalanche clock and plugins, evaluation costs, RNG states."""
        return {"model": self.model.state_dict(), "optimizer": self.strategy.optimizer.state_dict(),
                "strategy": cl_state.strategy_state(self.strategy, self.encode),
                "eval_seconds": list(self.eval_seconds), "rng": cl_state.rng_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where :meth:`state_dict` was taken (a freshly built learner only)."""
        cl_state.load_strategy_state(self.strategy, state["strategy"], self.decode)
        self.model.load_state_dict(state["model"])
        # Avalanche (re)builds the optimizer's parameter list on its first training call and then
        # drops the state; do that step now so the loaded Adam moments survive it.
        self.strategy.make_optimizer(reset_optimizer_state=True)
        self.strategy.optimizer.load_state_dict(state["optimizer"])
        self.eval_seconds = list(state["eval_seconds"])
        cl_state.set_rng_state(state["rng"])

    # ------------------------------------------------------------------ what clsim.lifecycle reads
    def costs(self) -> dict:
        p, stop = self.probe, self.plugin(EarlyStoppingPlugin)
        return {"train_seconds": float(sum(p.train_seconds)) + self.feature_seconds,
                "eval_seconds": float(sum(self.eval_seconds)),
                "samples_trained": int(sum(p.samples)), "trainable_params": self.trainable_params,
                "per_experience": {"train_seconds": p.train_seconds, "samples": p.samples,
                                   "loss": p.loss, "reg_ratio": p.reg_ratio},
                # early stopping: per trained experience, the epochs run and the one kept (0: the probe's model)
                **({"epochs_trained": int(sum(stop.epochs)), "early_stopping": stop.state_dict()} if stop else {}),
                # calibration: per trained experience, the logit offsets and temperature folded into the head
                **({"calibration": cal.state_dict()} if (cal := self.plugin(CalibrationPlugin)) else {})}

    def scalars(self, i: int) -> dict[str, float]:
        p, stop = self.probe, self.plugin(EarlyStoppingPlugin)
        out = {"train/loss": p.loss[-1], "train/reg_ratio": p.reg_ratio[-1],
               "cost/train_seconds": p.train_seconds[-1], "cost/samples": p.samples[-1]}
        if stop and stop.experience and stop.experience[-1] == i:
            out |= {"train/epochs": stop.epochs[-1], "train/best_epoch": stop.best_epoch[-1],
                    "train/val_acc": stop.best_score[-1]}
        return out

    def val_accuracy(self, i: int) -> float:
        """The model's accuracy on experience ``i``'s validation split: early stopping's score (the
        plugin gets this function, not the data, so no test split is within its reach)."""
        return M.accuracy(self._confusions([self.tokens.val[i]], [self.val_features[i]] if self.cached else None)[0])

    def val_data(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Experience ``i``'s validation split as the model's pooled features (cached when the backbone
        is frozen) and the labels, for calibration: the plugin is handed this function, not the
        stream."""
        split = self.tokens.val[i]
        X = self.val_features[i] if self.cached else pooled_features(
            self.model, split.ids, self.spec.train.eval_batch_size, self.device, self.spec.train.precision)
        return X, torch.as_tensor(np.asarray(split.labels), dtype=torch.long)

    def _confusions(self, splits: list, features: list | None, bottom: BottomCache | None = None) -> list[np.ndarray]:
        """Confusion matrices of the model on ``splits`` (from their cached ``features`` when the
        backbone is frozen; ``bottom``: for splits evaluated again, the test sets)."""
        n, bs, precision = len(self.tokens.label_names), self.spec.train.eval_batch_size, self.spec.train.precision
        if features is not None:
            return feature_confusion_row(self.model.head, features, [s.labels for s in splits], n, bs, self.device,
                                         precision)
        return confusion_row(self.model, splits, n, bs, self.device, precision, bottom)

    def extra(self) -> dict:
        return {}

    def train_experience(self, i: int) -> None:
        seed_everything(self.scenario.seed * 1000 + i)
        self.strategy.train(self.benchmark.train_stream[i], eval_streams=[])

    def accuracy_row(self) -> list[float]:
        """Accuracy on every test set (the confusion matrices of :meth:`evaluate`, reduced)."""
        return [M.accuracy(c) for c in self.evaluate()]

    def _weights_version(self) -> str:
        return weights_digest(self.model.state_dict().values())

    def evaluate(self) -> list[np.ndarray]:
        """Confusion matrices on every test set. A model that has not changed since the last
        evaluation (a periodic strategy serving between refits) is not evaluated again."""
        version = self._weights_version()
        if self._last_eval is not None and self._last_eval[0] == version:
            self.eval_seconds.append(0.0)
            return [c.copy() for c in self._last_eval[1]]
        t0 = time.perf_counter()
        row = self._confusions(self.tokens.test, self.test_features if self.cached else None, self._bottom)
        self.eval_seconds.append(time.perf_counter() - t0)
        self._last_eval = (self._weights_version(), row)
        return row
