"""The Flower ClientApp: the same Learner as a central run, on this client's share of the stream.

- ``query`` (once, before round 1): receives the job (scenario + strategy), keeps it in
  ``context.state``, and answers with its partition id, shard sizes and how many rounds its CL
  state has seen (a resumed server checks that no client lost its state).
- ``train``: loads the global arrays into this process's model, builds a Learner around it from
  the local preset, restores the CL state (``clsim.federated.state``), trains on its share of
  its current experience (the federation's experience minus its lag), saves the CL state, and
  replies with its trainable arrays, ``num-examples`` and what the set-up around training took.
- ``evaluate``: after the last round of an experience, the global model's accuracy on this
  client's own test shards of every experience (local forgetting).

Messages, not objects, carry everything, so the app runs unchanged in the simulation and
on real SuperNodes. What a message needs besides its client's state — the tokenised stream,
every client's partition, the pretrained model — is cached per process
(``clsim.federated.worker``), so a client that is not sampled costs nothing.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clsim import metrics as M
from clsim.evaluation import confusion_row
from clsim.federated.arrays import load_record, to_record
from clsim.federated.job import KEY as JOB_KEY
from clsim.federated.job import Job
from clsim.federated.state import NODE_STATE_DIR, ClientState, state_file
from clsim.federated.worker import client_tokens, release, shared_model

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


def _state_file(job: Job, context: Context, client: int) -> Path | None:
    return state_file(job.state_dir, job.run, f"{job.name}/seed_{job.scenario.seed}", context.node_config, client)


def _read_state(file: Path | None, context: Context) -> ClientState:
    return ClientState.read(file) if file else ClientState.load(context.state)


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
        raise ValueError(f"this SuperNode has num-partitions={clients} but strategy {job.name!r} has "
                         f"{job.fed.clients} clients (start it with num-partitions={job.fed.clients})")
    tokens = client_tokens(job, client)
    file = _state_file(job, context, client)
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(f"cannot keep this client's state in {file.parent} ({exc.strerror}); give the "
                               f"SuperNode a folder of its own: --node-config \"... {NODE_STATE_DIR}='DIR'\"") from None
    if int(record.get("from-round", 1)) == 1:  # the federation starts over: no earlier attempt's state
        if file is not None:
            file.unlink(missing_ok=True)
        else:
            ClientState().save(context.state)
    state = _read_state(file, context)
    info = ConfigRecord({"partition-id": client, "num-partitions": clients,
                         "train-sizes": [len(s.labels) for s in tokens.train],
                         "test-sizes": [len(s.labels) for s in tokens.test],
                         "rounds-trained": state.rounds, "state": str(file) if file else "context.state"})
    return Message(RecordDict({"client": info}), reply_to=msg)


def _learner(job: Job, tokens, model):
    from clsim.learner import (
        Learner,  # here: a SuperNode runs each message in a fresh process; only train needs Avalanche
    )

    return Learner(job.scenario, job.spec, tokens, device=_device(), model=model)


@app.train()
def train(msg: Message, context: Context) -> Message:
    from clsim.federated.anchors import anchor_at_current_weights  # here: as in _learner (Avalanche)
    from clsim.federated.proximal import ProximalPlugin
    from clsim.federated.state import dump_strategy, load_strategy  # (Avalanche)

    t0 = time.perf_counter()
    job = _job(context)
    fed, sc = job.fed, job.scenario
    client, _ = _partition(context)
    config = msg.content["config"]
    rnd = int(config["server-round"])
    if fed.fail is not None and fed.fail.client == client and fed.fail.round == rnd:
        raise InjectedFault(f"client {client} fails in round {rnd} (preset option fail)")
    experience = fed.client_experience(client, fed.experience_of_round(rnd))

    tokens = client_tokens(job, client)
    model = shared_model(sc.model, len(tokens.label_names), sc.seed, _device())
    load_record(model, msg.content["arrays"])  # every trainable parameter: the global model's
    learner = _learner(job, tokens, model)
    mu = float(config.get("proximal-mu", 0.0))
    if mu > 0:
        learner.strategy.plugins.insert(1, ProximalPlugin(mu))  # after the probe: its task loss stays pure

    file = _state_file(job, context, client)
    state = _read_state(file, context)
    opens = experience != state.experience  # the client's first round of this experience
    base = state.start_round(experience)
    if base:
        load_strategy(learner, base)
        if opens and fed.ewc_anchor == "global":
            moved = anchor_at_current_weights(learner.strategy, after=state.anchored)
            if moved is not None:  # every round of this experience restores the moved anchor
                state.base, state.anchored = dump_strategy(learner), moved
    n = len(tokens.train[experience].labels)
    setup = time.perf_counter() - t0
    if n:
        learner.train_experience(experience)
    t1 = time.perf_counter()
    state.finish_round(dump_strategy(learner))
    if file:
        state.write(file)  # on disk only: 1,000 clients' states stay out of memory
    else:
        state.save(context.state)
    arrays = to_record(model)
    release(model)

    probe = learner.probe
    metrics = MetricRecord({
        "num-examples": n,
        "train-loss": float(probe.loss[-1]) if probe.loss else 0.0,
        "train-seconds": float(sum(probe.train_seconds)) + float(getattr(learner, "feature_seconds", 0.0)),
        "samples": int(sum(probe.samples)),
        "experience": experience,
        # building the learner, restoring and saving state, arrays in and out: what is not training
        "setup-seconds": setup + time.perf_counter() - t1 - float(getattr(learner, "feature_seconds", 0.0)),
    })
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    job = _job(context)
    client, _ = _partition(context)
    tokens = client_tokens(job, client)
    n = sum(len(s.labels) for s in tokens.test)
    rnd = int(msg.content["config"]["server-round"])
    metrics = MetricRecord({"num-examples": n})
    if job.fed.ends_experience(rnd):  # the last round of an experience: local forgetting
        sc, device = job.scenario, _device()
        model = shared_model(sc.model, len(tokens.label_names), sc.seed, device)
        load_record(model, msg.content["arrays"])
        row = confusion_row(model, tokens.test, len(tokens.label_names), job.spec.train.eval_batch_size, device,
                            job.spec.train.precision)
        metrics["accuracy"] = [float(M.accuracy(c)) for c in row]
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


__all__ = ["app", "client_tokens", "InjectedFault"]
