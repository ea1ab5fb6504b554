"""The learner: one strategy on one tokenised stream — the same code centrally, in a Ray
actor, and inside a Flower ClientApp.

This is the single place where token sequences meet Avalanche: each experience becomes an
Avalanche classification dataset of ``(input_ids, label, task)`` items whose collate pads to
the longest sequence in the batch. The model takes ``input_ids`` alone, so Avalanche's
templates and plugins run unchanged (no custom template subclass).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.classification_dataset import TaskAwareClassificationDataset
from torch.utils.data import Dataset

from clsim.config import Scenario
from clsim.evaluation import evaluate_row
from clsim.models import PadCollate, TokenizedSplit, TokenizedStream, build_model, trainable_parameters
from clsim.strategies import ResolvedStrategy, build_strategy
from clsim.strategies.plugins import ProbePlugin


class _TokenDataset(Dataset):
    def __init__(self, split: TokenizedSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.ids)

    def __getitem__(self, i):
        return self.split.ids[i], int(self.split.labels[i])


def to_avalanche(split: TokenizedSplit, pad_id: int) -> TaskAwareClassificationDataset:
    """An Avalanche classification dataset (targets + task labels) with dynamic padding."""
    n = len(split.ids)
    return TaskAwareClassificationDataset(
        [_TokenDataset(split)],
        data_attributes=[
            DataAttribute([int(y) for y in split.labels], "targets"),
            DataAttribute([0] * n, "targets_task_labels", use_in_getitem=True),
        ],
        collate_fn=PadCollate(pad_id),
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Learner:
    """Builds model + strategy for ``spec`` and trains/evaluates experience by experience."""

    scenario: Scenario
    spec: ResolvedStrategy
    tokens: TokenizedStream
    device: str = "cpu"
    on_batch: object = None
    eval_seconds: list[float] = field(default_factory=list)

    def __post_init__(self):
        seed_everything(self.scenario.seed)
        self.model = build_model(self.scenario.model, len(self.tokens.label_names), self.scenario.seed)
        self.probe = ProbePlugin(self.on_batch)
        self.strategy = build_strategy(self.spec, self.model, self.scenario.train, self.device, [self.probe])
        # with_task_labels: experiences expose task labels, so Avalanche's loaders use our collate
        self.benchmark = with_task_labels(benchmark_from_datasets(
            train=[to_avalanche(s, self.tokens.pad_id) for s in self.tokens.train],
            test=[to_avalanche(s, self.tokens.pad_id) for s in self.tokens.test],
        ))

    @property
    def trainable_params(self) -> int:
        return trainable_parameters(self.model)

    def plugin(self, cls: type):
        """The strategy's plugin of type ``cls`` (e.g. to inspect a replay buffer), or None."""
        return next((p for p in self.strategy.plugins if isinstance(p, cls)), None)

    def train_experience(self, i: int) -> None:
        seed_everything(self.scenario.seed * 1000 + i)
        self.strategy.train(self.benchmark.train_stream[i], eval_streams=[])

    def evaluate(self) -> list[float]:
        t0 = time.perf_counter()
        row = evaluate_row(self.model, self.tokens.test, self.scenario.train.eval_batch_size,
                           self.device, self.tokens.pad_id)
        self.eval_seconds.append(time.perf_counter() - t0)
        return row
