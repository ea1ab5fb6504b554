"""The Flower ClientApp: the same Learner as a central run, on this client's share of the stream.

- ``query`` (once, before round 1): receives the job (scenario + strategy), keeps it in
  ``context.state``, and answers with its partition id and shard sizes.
- ``train``: loads the global arrays into a fresh Learner built from the local preset,
  restores the CL state (``clsim.federated.state``), trains on its share of its current
  experience (the federation's experience minus its lag), saves the CL state, and replies
  with its trainable arrays and ``num-examples``.
- ``evaluate``: after the last round of an experience, the global model's accuracy on this
  client's own test shards of every experience (local forgetting).

Messages, not objects, carry everything, so the app runs unchanged in the simulation and
on real SuperNodes. Data preparation is a pure function of the job and is cached per process.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clsim import metrics as M
from clsim.data import build_stream
from clsim.evaluation import confusion_row
from clsim.federated.arrays import load_record, to_record
from clsim.federated.job import KEY as JOB_KEY
from clsim.federated.job import Job
from clsim.federated.partition import client_stream
from clsim.models import build_model, tokenize_stream

app = ClientApp()


class InjectedFault(RuntimeError):
    """The failure a preset's ``fail: {client, round}`` asks for (tests of fault handling)."""


def _partition(context: Context) -> tuple[int, int]:
    cfg = context.node_config
    if "partition-id" not in cfg or "num-partitions" not in cfg:
        raise ValueError('this SuperNode needs --node-config "partition-id=<i> num-partitions=<n>"')
    return int(cfg["partition-id"]), int(cfg["num-partitions"])


def _job(context: Context) -> Job:
    if JOB_KEY not in context.state:
        raise RuntimeError("no job in context.state: the server's query message did not reach this node")
    return Job.from_record(context.state[JOB_KEY])


@lru_cache(maxsize=2)
def _all_tokens(job: Job):
    sc = job.scenario
    return tokenize_stream(build_stream(sc.stream, sc.seed, job.plan.file), sc.model)


@lru_cache(maxsize=4)
def client_tokens(job: Job, client: int, clients: int):
    """This client's shards of every experience (train and test)."""
    return client_stream(_all_tokens(job), job.fed.partition, client, clients, job.scenario.seed)


def _device() -> str:
    """CUDA when this process sees a GPU (Ray hides GPUs from clients that asked for none)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@app.query()
def join(msg: Message, context: Context) -> Message:
    record = msg.content["job"]
    context.state[JOB_KEY] = record
    client, clients = _partition(context)
    job = Job.from_record(record)
    if clients != job.fed.clients:
        raise ValueError(f"num-partitions={clients} but strategy {job.name!r} has {job.fed.clients} clients")
    tokens = client_tokens(job, client, clients)
    info = ConfigRecord({"partition-id": client, "num-partitions": clients,
                         "train-sizes": [len(s.labels) for s in tokens.train],
                         "test-sizes": [len(s.labels) for s in tokens.test]})
    return Message(RecordDict({"client": info}), reply_to=msg)


def _learner(job: Job, tokens):
    from clsim.learner import (
        Learner,  # here: a SuperNode runs each message in a fresh process; only train needs Avalanche
    )

    return Learner(job.scenario, job.spec, tokens, device=_device())


@app.train()
def train(msg: Message, context: Context) -> Message:
    from clsim.federated.proximal import ProximalPlugin  # here: as in _learner (Avalanche)
    from clsim.federated.state import KEY, ClientState, client_file, dump_strategy, load_strategy  # (Avalanche)

    job = _job(context)
    fed = job.fed
    client, clients = _partition(context)
    config = msg.content["config"]
    rnd = int(config["server-round"])
    if fed.fail is not None and fed.fail.client == client and fed.fail.round == rnd:
        raise InjectedFault(f"client {client} fails in round {rnd} (preset option fail)")
    experience = fed.client_experience(client, fed.experience_of_round(rnd))

    tokens = client_tokens(job, client, clients)
    learner = _learner(job, tokens)
    load_record(learner.model, msg.content["arrays"])
    mu = float(config.get("proximal-mu", 0.0))
    if mu > 0:
        learner.strategy.plugins.insert(1, ProximalPlugin(mu))  # after the probe: its task loss stays pure

    file = client_file(job.state_dir, client) if job.state_dir else None
    state = ClientState.read(file) if file and KEY not in context.state else ClientState.load(context.state)
    base = state.start_round(experience)
    if base:
        load_strategy(learner, base)
    n = len(tokens.train[experience].labels)
    if n:
        learner.train_experience(experience)
    state.finish_round(dump_strategy(learner))
    state.save(context.state)
    if file:
        state.write(file)

    probe = learner.probe
    metrics = MetricRecord({
        "num-examples": n,
        "train-loss": float(probe.loss[-1]) if probe.loss else 0.0,
        "train-seconds": float(sum(probe.train_seconds)) + float(getattr(learner, "feature_seconds", 0.0)),
        "samples": int(sum(probe.samples)),
        "experience": experience,
    })
    return Message(RecordDict({"arrays": to_record(learner.model), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    job = _job(context)
    client, clients = _partition(context)
    tokens = client_tokens(job, client, clients)
    n = sum(len(s.labels) for s in tokens.test)
    rnd = int(msg.content["config"]["server-round"])
    metrics = MetricRecord({"num-examples": n})
    if job.fed.ends_experience(rnd):  # the last round of an experience: local forgetting
        sc = job.scenario
        model = build_model(sc.model, len(tokens.label_names), sc.seed)
        load_record(model, msg.content["arrays"])
        device = _device()
        model.to(device)
        row = confusion_row(model, tokens.test, len(tokens.label_names), job.spec.train.eval_batch_size, device,
                            job.spec.train.precision)
        metrics["accuracy"] = [float(M.accuracy(c)) for c in row]
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


__all__ = ["app", "client_tokens", "InjectedFault"]
