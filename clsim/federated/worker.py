"""What a client process keeps between messages, so that a round costs what its clients train.

Flower's simulation runs ClientApps in a few long-lived worker processes (Ray actors), each
serving whichever clients are sampled, one message after another; a real SuperNode starts a
process per message. Either way a message's set-up is cached per process and keyed by what it
depends on — never per client, so a federation of 1,000 clients costs a worker no more than
one of 10:

- the tokenised stream (one tokeniser pass per process);
- every client's rows of every split: a partitioner assigns all clients at once anyway, so each
  split is partitioned once per process and a client's shards are a take of its rows;
- one model of the scenario's architecture, built once (pretrained weights read once). Every
  message loads the global arrays into it, which overwrite every trainable parameter, and the
  frozen ones are the pretrained weights all clients share: a reused model is exactly a fresh one.

Nothing per client is kept in memory: a client's CL state lives in its file
(:mod:`clsim.federated.state`), read when it is sampled.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, TypeVar

import numpy as np

from clsim.config import ModelConfig
from clsim.data import build_stream, derive_seed
from clsim.federated.job import Job
from clsim.federated.partition import TEST, TRAIN, partition_rows, take_rows
from clsim.memory import give_back
from clsim.models import TextClassifier, TokenizedStream, build_model, tokenize_stream

T = TypeVar("T")


class _Cache:
    """The ``size`` most recently used values, by key."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def get(self, key: str, make: Callable[[], T]) -> T:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = self.items[key] = make()
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value

    def clear(self) -> None:
        self.items.clear()


_TOKENS, _PARTITIONS, _CLIENTS, _MODEL = _Cache(2), _Cache(2), _Cache(16), _Cache(1)


def _data_key(job: Job) -> str:
    """What the data depend on: the stream, the seed, the tokeniser settings, the scenario file
    (relative data paths resolve against it)."""
    sc = job.scenario
    return "|".join([sc.stream.model_dump_json(), str(sc.seed), sc.model.model_dump_json(), str(job.plan.file)])


def _partition_key(job: Job) -> str:
    return "|".join([_data_key(job), job.fed.partition.model_dump_json(), str(job.fed.clients)])


def stream_tokens(job: Job) -> TokenizedStream:
    """The whole tokenised stream of ``job``'s scenario (once per process)."""
    sc = job.scenario
    return _TOKENS.get(_data_key(job), lambda: tokenize_stream(build_stream(sc.stream, sc.seed, job.plan.file),
                                                               sc.model))


def partitions(job: Job) -> dict[str, list[list[np.ndarray]]]:
    """``{"train"|"test": [experience][client] -> row indices}`` for every client (once per process)."""
    def make():
        tokens, seed, cfg, n = stream_tokens(job), job.scenario.seed, job.fed.partition, job.fed.clients
        return {"train": [partition_rows(s.labels, cfg, n, derive_seed(seed, i, TRAIN), where=f"{name} train")
                          for i, (s, name) in enumerate(zip(tokens.train, tokens.names))],
                "test": [partition_rows(s.labels, cfg, n, derive_seed(seed, i, TEST), test=True, where=f"{name} test")
                         for i, (s, name) in enumerate(zip(tokens.test, tokens.names))]}

    return _PARTITIONS.get(_partition_key(job), make)


def client_tokens(job: Job, client: int) -> TokenizedStream:
    """Client ``client``'s shards of every experience (train and test)."""
    fed = job.fed
    if not 0 <= client < fed.clients:
        raise ValueError(f"partition-id={client} is not a client of strategy {job.name!r}: it has "
                         f"{fed.clients} clients (partition-id 0 to {fed.clients - 1})")

    def make():
        tokens, rows = stream_tokens(job), partitions(job)
        return TokenizedStream(names=list(tokens.names), label_names=list(tokens.label_names),
                               train=[take_rows(s, r[client]) for s, r in zip(tokens.train, rows["train"])],
                               test=[take_rows(s, r[client]) for s, r in zip(tokens.test, rows["test"])],
                               pad_id=tokens.pad_id)

    return _CLIENTS.get(f"{_partition_key(job)}|{client}", make)


def shared_model(cfg: ModelConfig, num_labels: int, seed: int, device: str) -> TextClassifier:
    """This process's model of ``cfg`` (built on first use, on ``device``; one architecture at a
    time). Whoever uses it loads the global arrays first, and calls :func:`release` when done.
    ``model.initial_head`` keeps the head it was built with — the federation's initial head — so
    ``train.lp_when: new_head`` still knows a head that has not been trained once global arrays
    have been loaded over it."""
    def build() -> TextClassifier:
        model = build_model(cfg, num_labels, seed).to(device)
        model.initial_head = {k: v.detach().clone() for k, v in model.head.state_dict().items()}
        return model

    key = "|".join([cfg.model_dump_json(), str(num_labels), str(seed), device])
    return _MODEL.get(key, build)


def release(model: TextClassifier) -> None:
    """After a message: free the gradients (a parameter-sized buffer per trainable parameter), and
    hand the memory the message freed back to the system (glibc keeps freed pages otherwise: about
    90 MB per worker after a LoRA round on MiniLM)."""
    model.zero_grad(set_to_none=True)
    give_back()


def clear() -> None:
    """Forget everything this process cached (tests)."""
    for cache in (_TOKENS, _PARTITIONS, _CLIENTS, _MODEL):
        cache.clear()
