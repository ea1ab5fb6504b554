"""Each client's share of every experience, from flwr-datasets partitioners.

A split (train or test) of one experience becomes a Hugging Face ``datasets.Dataset`` with
its row index and label; the partitioner named by the preset (``IidPartitioner``,
``DirichletPartitioner``, ``NaturalIdPartitioner``) assigns rows to clients. Every client
computes the same assignment from (scenario seed, experience, split), so no data moves; a
worker process computes every client's rows of a split at once (``clsim.federated.worker``).
"""
from __future__ import annotations

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner

from clsim.config import ConfigError
from clsim.federated.schema import ColumnPartition, DirichletPartition, IidPartition
from clsim.models import TokenizedSplit

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


def _assign(part, num_partitions: int) -> list[np.ndarray]:
    """Every partition's rows (sorted), as the partitioner's ``load_partition`` selects them, for
    all partitions at once: selecting 1,000 partitions one by one takes half a minute. An IID
    partitioner's partition ``i`` is the dataset's contiguous shard ``i`` (``Dataset.shard``'s
    arithmetic, repeated here; a shard past a small split's end is empty); a Dirichlet partitioner
    keeps its draw as a mapping (partition -> dataset positions), read as it is."""
    available = part.num_partitions  # (a Dirichlet partitioner draws its assignment here)
    rows = np.asarray(part.dataset["row"], dtype=np.int64)
    if isinstance(part, IidPartitioner):
        div, mod = divmod(len(rows), num_partitions)
        starts = [div * i + min(i, mod) for i in range(num_partitions + 1)]
        return [np.sort(rows[starts[i]:starts[i + 1]]) for i in range(num_partitions)]
    indices = getattr(part, "_partition_id_to_indices", None) if isinstance(part, DirichletPartitioner) else None
    out = []
    for pid in range(num_partitions):
        if pid >= available:  # a partition the partitioner has no data for is empty
            out.append(np.zeros(0, np.int64))
        elif isinstance(indices, dict) and pid in indices:
            out.append(np.sort(rows[np.asarray(indices[pid], dtype=np.int64)]))
        else:
            out.append(np.sort(np.asarray(part.load_partition(pid)["row"], dtype=np.int64)))
    return out


def partition_rows(labels: np.ndarray, cfg, num_partitions: int, seed: int, test: bool = False,
                   where: str = "a split") -> list[np.ndarray]:
    """Row indices of every partition (sorted); a partition the partitioner has no data for is empty.

    A Dirichlet draw that cannot give every client ``min_partition_size`` rows is a ConfigError
    naming the split (``where``), except for a ``test`` split, which is relaxed to no minimum:
    it only serves the clients' own evaluation."""
    n = len(labels)
    if n == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(num_partitions)]
    ds = Dataset.from_dict({"row": np.arange(n, dtype=np.int64), "label": np.asarray(labels, dtype=np.int64)})
    if isinstance(cfg, IidPartition):
        ds = ds.shuffle(seed=seed)  # IidPartitioner takes contiguous shards
    part = _partitioner(cfg, num_partitions, n, seed)
    part.dataset = ds
    if isinstance(cfg, DirichletPartition) and n < num_partitions:
        raise ConfigError(None, "federated.partition", f"{where} has {n} rows for {num_partitions} clients: a Dirichlet "
                                                       "partition needs more rows than clients (add rows, or "
                                                       "partition iid)")
    try:
        return _assign(part, num_partitions)
    except ValueError as exc:
        if not isinstance(cfg, DirichletPartition):
            raise
        if test and cfg.min_partition_size:  # a few clients without test rows is better than no run
            return partition_rows(labels, cfg.model_copy(update={"min_partition_size": 0}), num_partitions, seed,
                                  where=where)
        raise ConfigError(None, "federated.partition",
                          f"Dirichlet(alpha={cfg.alpha}) found no split of {where} ({n} rows) into {num_partitions} "
                          f"clients giving each at least min_partition_size={cfg.min_partition_size} rows in 10 "
                          f"draws ({exc}); lower min_partition_size, raise alpha or add rows") from None


def take_rows(split: TokenizedSplit, rows: np.ndarray) -> TokenizedSplit:
    return TokenizedSplit([split.ids[i] for i in rows], split.labels[rows])
