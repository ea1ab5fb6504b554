"""Each client's share of every experience, from flwr-datasets partitioners.

A split (train or test) of one experience becomes a Hugging Face ``datasets.Dataset`` with
its row index and label; the partitioner named by the preset (``IidPartitioner``,
``DirichletPartitioner``, ``NaturalIdPartitioner``) assigns rows to clients. Every client
computes the same assignment from (scenario seed, experience, split), so no data moves.
"""
from __future__ import annotations

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner

from clsim.data import derive_seed
from clsim.federated.schema import ColumnPartition, DirichletPartition, IidPartition
from clsim.models import TokenizedSplit, TokenizedStream

TRAIN, TEST = 7, 8  # derive_seed purposes: independent draws for the two splits


def _partitioner(cfg, num_partitions: int, n_rows: int, seed: int):
    if isinstance(cfg, IidPartition):
        return IidPartitioner(num_partitions)
    if isinstance(cfg, DirichletPartition):
        # a small test split cannot meet the training split's minimum: relax it, never fail on it
        floor = min(cfg.min_partition_size, n_rows // (2 * num_partitions))
        return DirichletPartitioner(num_partitions, partition_by="label", alpha=cfg.alpha,
                                    min_partition_size=floor, self_balancing=cfg.self_balancing, seed=seed)
    if isinstance(cfg, ColumnPartition):
        return NaturalIdPartitioner(partition_by=cfg.column)
    raise TypeError(f"unknown partition config {type(cfg).__name__}")


def partition_rows(labels: np.ndarray, cfg, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Row indices of every partition (sorted); a partition the partitioner has no data for is empty."""
    n = len(labels)
    if n == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(num_partitions)]
    ds = Dataset.from_dict({"row": np.arange(n, dtype=np.int64), "label": np.asarray(labels, dtype=np.int64)})
    if isinstance(cfg, IidPartition):
        ds = ds.shuffle(seed=seed)  # IidPartitioner takes contiguous shards
    part = _partitioner(cfg, num_partitions, n, seed)
    part.dataset = ds
    available = part.num_partitions
    out = []
    for pid in range(num_partitions):
        rows = np.asarray(part.load_partition(pid)["row"], dtype=np.int64) if pid < available else np.zeros(0, np.int64)
        out.append(np.sort(rows))
    return out


def _take(split: TokenizedSplit, rows: np.ndarray) -> TokenizedSplit:
    return TokenizedSplit([split.ids[i] for i in rows], split.labels[rows])


def client_stream(tokens: TokenizedStream, cfg, client: int, num_clients: int, seed: int) -> TokenizedStream:
    """Client ``client``'s shards of every experience's train and test split."""
    def shard(split: TokenizedSplit, i: int, purpose: int) -> TokenizedSplit:
        rows = partition_rows(split.labels, cfg, num_clients, derive_seed(seed, i, purpose))[client]
        return _take(split, rows)

    return TokenizedStream(
        names=list(tokens.names), label_names=list(tokens.label_names),
        train=[shard(s, i, TRAIN) for i, s in enumerate(tokens.train)],
        test=[shard(s, i, TEST) for i, s in enumerate(tokens.test)],
        pad_id=tokens.pad_id,
    )
