"""Federated continual learning with Flower: presets, aggregation, partitions, the ClientApp's CL
state across rounds, bytes per round, node sampling and timeouts, and one simulated run on Ray.

The ClientApp is called in-process through ``ClientApp.__call__`` with real Flower ``Context``s
and ``Message``s (``LoopbackGrid`` below delivers a server's messages the same way), so
everything but Flower's transport is exercised without starting Ray. The simulated run starts
Flower's simulation engine on Ray for real.
"""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import plan_of, resolve
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from clsim.config import ConfigError, Scenario
from clsim.federated.arrays import load_record, record_bytes, to_record
from clsim.federated.job import Job, federated_job

FEDERATED = ["fedavg", "fedavg_replay", "fedavg_ewc", "fedprox"]


@pytest.fixture(autouse=True)
def server_identity():
    """Messages are created by a task of some run (a ServerApp sets this; here, the test is it)."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def fed_scenario(preset: str = "fedavg", model: dict | None = None, more: tuple = (), **fed) -> Scenario:
    """Two synthetic experiences (and ``more``) on the tiny model, one federated strategy with overrides ``fed``."""
    return Scenario.model_validate({
        "name": "fed_unit", "seed": 0,
        "stream": {"source": "synthetic",
                   "experiences": ["food", {"domain": "tech", "label_prior": [0.6, 0.2, 0.2]}, *more],
                   "train_per_experience": 48, "test_per_experience": 24},
        "model": {"pretrained": "tiny", "finetune": "full", "max_length": 32, **(model or {})},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-3},
        "strategies": [{"preset": preset, "clients": 2, "rounds_per_experience": 1, "partition": {"kind": "iid"},
                        **fed}],
    })


def context(client: int, clients: int = 2) -> Context:
    return Context(run_id=1, node_id=secrets.randbits(62), node_config={"partition-id": client,
                                                                     "num-partitions": clients},
                   state=RecordDict(), run_config={})


def join(job: Job, ctx: Context) -> Message:
    from clsim.federated.client_app import app

    msg = Message(RecordDict({"job": job.to_record()}), dst_node_id=ctx.node_id, message_type=MessageType.QUERY)
    return app(msg, ctx)


def train_round(ctx: Context, arrays, rnd: int, **config) -> Message:
    from clsim.federated.client_app import app

    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": rnd, **config})})
    reply = app(Message(content, dst_node_id=ctx.node_id, message_type=MessageType.TRAIN), ctx)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    return reply


def resolve_job(scenario: Scenario, strategy: str | None = None) -> Job:
    """The federated job of a parsed scenario."""
    return federated_job(plan_of(scenario), strategy)


def tokens_of(job: Job):
    from clsim.data import build_stream
    from clsim.models import tokenize_stream

    sc = job.scenario
    return tokenize_stream(build_stream(sc.stream, sc.seed), sc.model)


def global_model(job: Job):
    from clsim.models import build_model

    return build_model(job.scenario.model, 3, job.scenario.seed)


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("preset", FEDERATED)
def test_federated_presets_resolve_to_a_flower_strategy_and_a_local_preset(preset):
    from flwr.serverapp.strategy import Strategy

    from clsim.federated.server import build_server_strategy

    spec = resolve(preset)
    fed = spec.extensions["federated"]
    assert fed.local in ("naive", "replay", "ewc")
    local = resolve(fed.local)
    assert [c.cls for c in spec.plugins] == [c.cls for c in local.plugins]  # clients run exactly the local preset
    assert spec.plugins == local.plugins
    assert isinstance(build_server_strategy(fed), Strategy)
    assert spec.hparams()["federated.server"] == fed.server


def test_bad_federated_presets_name_file_and_field(tmp_path):
    cases = {
        "server: NoSuchAvg": "federated.server",
        "local: fedavg": "federated.local",  # a federated preset is not a core preset
        "server_params: {bogus: 1}": "federated.server_params",
        "partition: {kind: dirichlet, alpha: -1}": "federated.partition.dirichlet.alpha",
    }
    for line, field in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(f"name: bad\nfederated:\n  {line}\n")
        with pytest.raises(ConfigError) as err:
            resolve(str(path))
        assert err.value.field.startswith(field.split(".dirichlet")[0]) and str(path) in str(err.value), line
    with pytest.raises(ConfigError) as err:  # an override for a federated key is checked against the scenario
        resolve({"preset": "fedavg", "clients": 2, "client_lag": [0]}, "s.yaml", 4)
    assert err.value.field == "strategies[4]" and "client_lag" in err.value.message


# ----------------------------------------------------------------------------- aggregation
def test_fedavg_of_known_client_arrays_is_the_weighted_mean():
    """Flower's FedAvg, unchanged, on two clients' trainable parameters (weights 30 and 10)."""
    from flwr.serverapp.strategy import FedAvg

    job = resolve_job(fed_scenario(), None)
    models, weights = [], [30, 10]
    for seed in (1, 2):
        m = global_model(job)
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p))
        models.append(m)
    replies = [Message(RecordDict({"arrays": to_record(m), "metrics": MetricRecord({"num-examples": w})}),
                       dst_node_id=0, message_type=MessageType.TRAIN) for m, w in zip(models, weights)]
    arrays, _ = FedAvg().aggregate_train(1, replies)
    merged = global_model(job)
    load_record(merged, arrays)
    for (name, p), p0, p1 in zip(merged.named_parameters(), models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, (30 * p0 + 10 * p1) / 40, msg=name)


# ----------------------------------------------------------------------------- partitions
@pytest.mark.parametrize("partition", [{"kind": "iid"}, {"kind": "dirichlet", "alpha": 0.3},
                                       {"kind": "by_column", "column": "label"}])
def test_partitions_split_every_experience_disjointly_and_reproducibly(partition):
    from clsim.federated.partition import partition_rows
    from clsim.federated.schema import FederatedConfig

    cfg = FederatedConfig(clients=3, partition=partition).partition
    labels = np.random.default_rng(0).integers(0, 3, 90)
    parts = partition_rows(labels, cfg, 3, seed=11)
    rows = np.concatenate(parts)
    assert sorted(rows.tolist()) == list(range(90)), "every row goes to exactly one client"
    assert all((a == b).all() for a, b in zip(parts, partition_rows(labels, cfg, 3, seed=11)))
    if partition["kind"] == "by_column":
        assert [set(labels[p].tolist()) for p in parts] == [{0}, {1}, {2}]
    if partition["kind"] == "dirichlet":  # label skew: clients' label mixes differ
        mixes = [np.bincount(labels[p], minlength=3) / max(len(p), 1) for p in parts]
        assert max(np.abs(mixes[0] - mixes[1]).max(), np.abs(mixes[1] - mixes[2]).max()) > 0.2


# ----------------------------------------------------------------------------- the ClientApp
def _buffer_sequences(strategy) -> list[tuple[int, ...]]:
    from avalanche.training.plugins import ReplayPlugin

    plugin = next(p for p in strategy.plugins if isinstance(p, ReplayPlugin))
    return [tuple(int(t) for t in x) for x, *_ in plugin.storage_policy.buffer]


def test_replay_state_survives_rounds_in_context_state():
    """Each round is a fresh Learner; the buffer comes back from context.state: after two rounds on
    experience 0 it holds experience-0 samples (once, not once per round), after round 3 (experience
    1) it still holds them, next to experience-1 samples."""
    from clsim.federated.state import ClientState, load_strategy
    from clsim.federated.worker import client_tokens
    from clsim.learner import Learner

    job = resolve_job(fed_scenario("fedavg_replay", rounds_per_experience=2), None)
    ctx = context(0)
    assert not join(job, ctx).has_error()
    tokens = client_tokens(job, 0)
    shard = [{tuple(int(t) for t in x) for x in s.ids} for s in tokens.train]
    arrays = to_record(global_model(job))

    def restored():  # what the next round (a new process, in a real SuperNode) would start from
        state = ClientState.load(ctx.state)
        learner = Learner(job.scenario, job.spec, tokens)
        load_strategy(learner, state.latest)
        return state, learner.strategy

    for rnd in (1, 2):
        arrays = train_round(ctx, arrays, rnd).content["arrays"]
    state, strategy = restored()
    buf = _buffer_sequences(strategy)
    assert state.experience == 0 and state.rounds == 2
    assert buf and all(s in shard[0] for s in buf)
    assert len(buf) == len(shard[0]), "experience 0 entered the buffer once, not once per round"
    assert strategy.clock.train_exp_counter == 1

    train_round(ctx, arrays, 3)
    state, strategy = restored()
    buf = _buffer_sequences(strategy)
    assert state.experience == 1 and strategy.clock.train_exp_counter == 2
    from_0 = sum(s in shard[0] for s in buf)
    assert from_0 > 0 and sum(s in shard[1] for s in buf) > 0 and from_0 + sum(s in shard[1] for s in buf) == len(buf)


@pytest.mark.parametrize("when, probed", [("new_head", [1]), ("every", [1, 2, 3])])
def test_a_client_probes_a_new_head_only(when, probed, monkeypatch):
    """``lp_when: new_head`` on a Flower client: the probe runs in round 1 (the global head is the
    seeded initial one) and not once the head has been trained, although every round builds the
    strategy after loading the global arrays; ``every`` probes each round."""
    from clsim.federated.worker import clear
    from clsim.strategies.plugins import LinearProbePlugin

    clear()  # a model built in this test keeps its initial head
    sc = fed_scenario(rounds_per_experience=2)
    sc = sc.model_copy(update={"train": sc.train.model_copy(update={"lp_epochs": 2, "lp_when": when})})
    job = resolve_job(sc, None)
    ctx = context(0)
    assert not join(job, ctx).has_error()
    fits, real = [], LinearProbePlugin.fit
    rnd = [0]
    monkeypatch.setattr(LinearProbePlugin, "fit", lambda self, *a: (fits.append(rnd[0]), real(self, *a)))
    arrays = to_record(global_model(job))
    for rnd[0] in (1, 2, 3):
        arrays = train_round(ctx, arrays, rnd[0]).content["arrays"]
    assert fits == probed


def test_only_trainable_parameters_travel_and_lora_is_a_small_fraction_of_full():
    """Bytes a client uploads in one round (its reply's records), full vs head vs LoRA."""
    sent = {}
    for mode in ("full", "head", "lora"):
        job = resolve_job(fed_scenario(model={"finetune": mode}), None)
        ctx = context(0)
        join(job, ctx)
        model = global_model(job)
        reply = train_round(ctx, to_record(model), 1)
        names = set(reply.content["arrays"])
        assert names == {n for n, p in model.named_parameters() if p.requires_grad}
        if mode == "head":
            assert all(n.startswith("head.") for n in names)
        sent[mode] = record_bytes(reply.content)
    assert sent["lora"] < 0.05 * sent["full"] and sent["head"] < sent["lora"], sent


def test_fedprox_term_keeps_clients_near_the_global_model():
    # Without the recipe's extras, each for a reason: no linear probe (it refits the head before
    # fine-tuning, without the proximal term); no warmup (the client's share is 2 steps: the first,
    # at lr 0, leaves the term nothing to pull back); no weight decay (AdamW decays every weight,
    # so the term's gradient becomes nonzero on weights the task never touches, e.g. unused
    # embedding rows, and Adam scales those tiny gradients up to full steps: mu=100 then moves
    # the model more than mu=0).
    job = resolve_job(fed_scenario("fedprox", train={"lp_epochs": 0, "warmup": 0, "weight_decay": 0}), None)
    start = global_model(job)
    moved = {}
    for mu in (0.0, 100.0):
        ctx = context(0)
        join(job, ctx)
        reply = train_round(ctx, to_record(start), 1, **{"proximal-mu": mu})
        after = global_model(job)
        load_record(after, reply.content["arrays"])
        moved[mu] = sum(float((a - b).detach().pow(2).sum()) for a, b in zip(after.parameters(), start.parameters()))
    assert 0 < moved[100.0] < 0.5 * moved[0.0], moved


def test_client_lag_lets_drift_reach_clients_out_of_sync():
    """With lag [0, 1], in round 2 (the federation's experience 1) client 1 still trains on experience 0."""
    job = resolve_job(fed_scenario(client_lag=[0, 1]), None)
    arrays = to_record(global_model(job))
    seen = {}
    for client in (0, 1):
        ctx = context(client)
        join(job, ctx)
        seen[client] = [int(train_round(ctx, arrays, rnd).content["metrics"]["experience"]) for rnd in (1, 2)]
    assert seen == {0: [0, 1], 1: [0, 0]}


def test_injected_fault_raises_in_its_round_only():
    from clsim.federated.client_app import InjectedFault, app

    job = resolve_job(fed_scenario(fail={"client": 1, "round": 2}), None)
    ctx = context(1)
    join(job, ctx)
    arrays = to_record(global_model(job))
    train_round(ctx, arrays, 1)
    msg = Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 2})}),
                  dst_node_id=ctx.node_id, message_type=MessageType.TRAIN)
    with pytest.raises(InjectedFault, match="client 1 fails in round 2"):
        app(msg, ctx)


# ----------------------------------------------------------------------------- server side: the Fleet
class LoopbackGrid(Grid):
    """A test transport: delivers messages to the real ClientApp in this process, one real Context
    per node; node ids are random, as on a SuperLink. ``clients`` lists the partitions present."""

    def __init__(self, clients: list[int], num_partitions: int):
        from clsim.federated.client_app import app

        self.app = app
        self.contexts = {}
        for c in clients:
            ctx = context(c, num_partitions)
            self.contexts[ctx.node_id] = ctx

    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id=dst_node_id, message_type=message_type)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for m in messages:
            ctx = self.contexts.get(m.metadata.dst_node_id)
            if ctx is not None:
                replies.append(self.app(m, ctx))
            elif timeout:  # a node that is not there never answers
                time.sleep(min(timeout, 1.0))
        return replies


def test_client_sampling_is_seeded_by_partition_not_by_node_id():
    """Two federations with different random node ids pick the same clients with one seed."""
    import random

    from flwr.serverapp.strategy import FedAvg

    from clsim.federated.fleet import Fleet

    job = resolve_job(fed_scenario(clients=4, partition={"kind": "iid"}), None)
    picks = []
    for _ in range(2):
        fleet = Fleet(LoopbackGrid([3, 1, 0, 2], 4), 4, node_timeout=5)
        fleet.discover(job.to_record())
        random.seed(7)
        strategy = FedAvg(fraction_train=0.5, min_available_nodes=4)
        rounds = []
        for rnd in (1, 2, 3):
            msgs = strategy.configure_train(rnd, to_record(global_model(job)), ConfigRecord(), fleet)
            rounds.append(sorted(fleet.partition_of[m.metadata.dst_node_id] for m in msgs))
        picks.append(rounds)
    assert picks[0] == picks[1] and all(len(r) == 2 for r in picks[0])


def test_a_missing_node_ends_the_run_with_a_clear_message_not_a_hang():
    from clsim.federated.fleet import FederationError, Fleet

    job = resolve_job(fed_scenario(), None)
    fleet = Fleet(LoopbackGrid([0], 2), 2, node_timeout=2, poll=0.2)
    t0 = time.monotonic()
    with pytest.raises(FederationError, match=r"1 of 2 clients joined.*partition-id \[1\]"):
        fleet.discover(job.to_record())
    assert time.monotonic() - t0 < 30


def test_connected_nodes_slower_to_answer_than_node_timeout_still_join():
    """On real SuperNodes the join query's reply waits for a fresh ClientApp process (torch,
    Avalanche): connected nodes get the reply deadline, not node_timeout, to answer."""
    from clsim.federated.fleet import Fleet

    class SlowGrid(LoopbackGrid):
        def send_and_receive(self, messages, *, timeout=None):
            if timeout is not None and timeout < 1.5:  # replies take 1.5 s, longer than node_timeout
                time.sleep(timeout)
                return []
            time.sleep(1.5)
            return super().send_and_receive(messages, timeout=timeout)

    job = resolve_job(fed_scenario(), None)
    fleet = Fleet(SlowGrid([1, 0], 2), 2, node_timeout=1, poll=0.2, reply_timeout=60)
    fleet.discover(job.to_record())
    assert sorted(fleet.partition_of.values()) == [0, 1]


def test_a_node_the_superlink_declares_unavailable_is_one_failure_of_its_own_partition():
    """A SuperNode that stops sending heartbeats: the SuperLink answers its messages itself with
    "Node Unavailable" (from the SuperLink's node id); the failure belongs to that node's partition."""
    from flwr.app import Error
    from flwr.common.constant import SUPERLINK_NODE_ID

    from clsim.federated.fleet import Fleet

    class DeadNodeGrid(LoopbackGrid):
        dead: int | None = None

        def send_and_receive(self, messages, *, timeout=None):
            replies = []
            for m in messages:
                m.metadata.__dict__["_message_id"] = m.object_id  # as the SuperLink's grid does on push
                if m.metadata.dst_node_id == self.dead:
                    r = Message(Error(code=5, reason="Error: Node Unavailable"), reply_to=m)
                    r.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
                    replies.append(r)
                else:
                    replies.extend(super().send_and_receive([m], timeout=timeout))
            return replies

    job = resolve_job(fed_scenario(), None)
    grid = DeadNodeGrid([0, 1], 2)
    fleet = Fleet(grid, 2, node_timeout=5)
    fleet.discover(job.to_record())
    grid.dead = next(n for n, pid in fleet.partition_of.items() if pid == 1)
    msgs = [Message(RecordDict({"arrays": to_record(global_model(job)), "config": ConfigRecord({"server-round": 1})}),
                    dst_node_id=n, message_type=MessageType.TRAIN) for n in fleet.get_node_ids()]
    replies = fleet.send_and_receive(msgs, timeout=60)
    assert len(replies) == 2 and replies[1].has_error()  # in partition order: the failure is partition 1's
    t = fleet.rounds[1]
    assert [(f["client"], f["reason"]) for f in t.failures] == [(1, "Error: Node Unavailable")]
    assert sorted(t.replies["train"]) == [0]


# ----------------------------------------------------------------------------- simulated on Ray
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """``runner.execute`` on a 2-client, 2-experience federated strategy where client 1 fails in
    round 2: Flower's simulation engine on the Ray clsim starts."""
    from clsim.data import build_stream
    from clsim.execution import execute
    from clsim.models import tokenize_stream

    sc = fed_scenario(fail={"client": 1, "round": 2})
    run_dir = tmp_path_factory.mktemp("fed_run")
    p = plan_of(sc, run_dir / "scenario.yaml")
    tokens = tokenize_stream(build_stream(sc.stream, sc.seed), sc.model)
    events = []
    (over_seeds,) = execute(p, {sc.seed: tokens}, run_dir, device="cpu", progress=lambda *e: events.append(e))
    assert over_seeds["complete"] and over_seeds["seeds"] == [0]
    doc = json.loads((run_dir / "fedavg" / "seed_0" / "metrics.json").read_text())  # the run of seed 0
    return run_dir, doc, tokens, events


def test_simulated_run_writes_R_bytes_and_per_client_matrices(simulated):
    run_dir, doc, tokens, events = simulated
    on_disk = json.loads((run_dir / "fedavg" / "seed_0" / "metrics.json").read_text())
    assert on_disk["accuracy_matrix"] == doc["accuracy_matrix"] and on_disk["complete"]
    R = np.asarray(doc["accuracy_matrix"], dtype=float)
    assert R.shape == (2, 2) and len(doc["zero_shot"]) == 2 and np.all((R >= 0) & (R <= 1))
    assert doc["rounds"] == 2 and len(doc["bytes_up"]) == len(doc["bytes_down"]) == 2
    per_model = record_bytes(RecordDict({"a": to_record(global_model(resolve_job(fed_scenario(), None)))}))
    # down: arrays to 2 clients for training + 2 for evaluation; up: 2 (round 1) / 1 (round 2) trained arrays
    assert all(4 * per_model <= b < 4 * per_model + 4096 for b in doc["bytes_down"])
    assert 2 * per_model <= doc["bytes_up"][0] < 2 * per_model + 4096
    assert per_model <= doc["bytes_up"][1] < per_model + 4096
    for c, client in enumerate(doc["clients"]):
        Rc = np.asarray(client["accuracy_matrix"], dtype=float)
        assert Rc.shape == (2, 2) and np.all((Rc >= 0) & (Rc <= 1))
        assert doc["clients_info"][c]["partition-id"] == c
    sizes = np.asarray([info["test-sizes"] for info in doc["clients_info"]])
    assert sizes.sum(axis=0).tolist() == [len(s.labels) for s in tokens.test]
    # the global accuracy is the clients' local accuracies weighted by their test shard sizes
    for k in range(2):
        local = np.asarray([c["accuracy_matrix"][k] for c in doc["clients"]])
        np.testing.assert_allclose((local * sizes).sum(0) / sizes.sum(0), R[k], atol=1e-9)
    assert ("fedavg", "done_exp", 1, 2, 2) in events and ("fedavg", "finished", -1, 1, 1) in events
    assert (run_dir / "summary.csv").read_text().count("fedavg") == 1


def test_simulated_run_survives_a_failing_client(simulated):
    _, doc, _, _ = simulated
    r1, r2 = doc["round_log"]
    assert r1["clients_trained"] == [0, 1] and not r1["failures"]
    assert r2["clients_trained"] == [0], "round 2 aggregated the client that did not fail"
    assert [(f["client"], f["type"]) for f in r2["failures"]] == [(1, "train")]
    assert "fails in round 2" in r2["failures"][0]["reason"] and doc["failures"] == 1
    assert doc["complete"] and len(doc["accuracy_matrix"]) == 2


def test_simulated_run_tensorboard_reads_back(simulated):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, doc, _, _ = simulated
    acc = EventAccumulator(str(run_dir / "fedavg" / "seed_0"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"federated/bytes_up", "federated/bytes_down", "federated/failures", "accuracy/food"} <= tags
    assert [e.value for e in acc.Scalars("federated/bytes_up")] == doc["bytes_up"]
    assert [e.value for e in acc.Scalars("federated/failures")] == [0, 1]
    assert {"client_0/accuracy/food", "client_1/accuracy/tech"} <= tags


# ----------------------------------------------------------------------------- CLI
def test_flower_certs_command_makes_a_ca_and_a_localhost_certificate(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from typer.testing import CliRunner

    from clsim.cli import app

    result = CliRunner().invoke(app, ["flower", "certs", str(tmp_path / "certs")])
    assert result.exit_code == 0, result.output
    ca = x509.load_pem_x509_certificate((tmp_path / "certs" / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "server.pem").read_bytes())
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert (tmp_path / "certs" / "server.key").stat().st_mode & 0o077 == 0, "private key readable by owner only"


# ----------------------------------------------------------------------------- resume
class Crash(Exception):
    """Stands in for the server process dying at a chosen point."""


def _without_timings(doc: dict) -> dict:
    d = json.loads(json.dumps(doc, default=str))
    for k in ("train_seconds", "eval_seconds", "wall_seconds"):
        d["costs"].pop(k)
    for entry in d["round_log"]:
        for k in ("train_seconds", "train_wall_seconds", "slowest_client_train_seconds", "client_setup_seconds"):
            entry.pop(k)
    d.pop("resumes")
    return d


@pytest.mark.parametrize("preset, fed, crash, from_round", [
    # killed after experience 0 was checkpointed; clients' local CL state is a replay buffer
    ("fedavg_replay", {}, ("done_exp", 0, 1), 2),
    # killed in round 4 (experience 1's second), before the server checkpointed it: it resumes
    # mid-experience from round 3 while the clients' files already hold round 4. A stateful
    # server optimiser (FedAvgM's momentum), EWC importances on clients, clients out of step
    ("fedavg_ewc", {"server": "FedAvgM", "server_params": {"server_momentum": 0.9}, "rounds_per_experience": 2,
                    "client_lag": [0, 1]}, ("train", 1, 2), 4),
])
def test_federated_resume_matches_uninterrupted_run(preset, fed, crash, from_round, tmp_path):
    """The model of Avalanche's checkpointing test, for a federation: run, run killed, resume, compare."""
    from dataclasses import replace

    from clsim.federated.server import serve

    sc = fed_scenario(preset, more=("travel",), **fed)

    def run(out, resume=False, progress=None):
        job = replace(resolve_job(sc, None), state_dir=str(out / preset / "seed_0" / "clients"))
        return serve(LoopbackGrid([1, 0], 2), job, out, tokens_of(job), resume=resume, progress=progress)

    def crash_at(run_name, phase, i, done, total):
        if (phase, i, done) == crash:
            raise Crash(f"{phase} {i}")

    reference = run(tmp_path / "a")
    with pytest.raises(Crash):
        run(tmp_path / "b", progress=crash_at)
    partial = json.loads((tmp_path / "b" / preset / "seed_0" / "metrics.json").read_text())
    assert not partial["complete"] and len(partial["accuracy_matrix"]) == 1
    assert sorted(p.name for p in (tmp_path / "b" / preset / "seed_0" / "clients").iterdir()) == ["client_0.pt", "client_1.pt"]
    resumed = run(tmp_path / "b", resume=True)

    assert resumed["complete"] and len(resumed["accuracy_matrix"]) == 3
    assert resumed["resumes"] == [{"reason": "resume", "from_experience": 1, "from_round": from_round}]
    assert [r["round"] for r in resumed["round_log"]] == list(range(1, 3 * fed.get("rounds_per_experience", 1) + 1))
    assert _without_timings(resumed) == _without_timings(reference)
    # resuming a finished run changes nothing
    assert _without_timings(run(tmp_path / "b", resume=True)) == _without_timings(reference)


def test_federated_resume_refuses_lost_client_state(tmp_path):
    """Clients whose state files are gone would silently retrain from scratch (and end elsewhere):
    the resumed server asks each client how many rounds its state holds and stops, naming one."""
    import shutil
    from dataclasses import replace

    from clsim.federated.fleet import FederationError
    from clsim.federated.server import serve

    sc = fed_scenario("fedavg_replay", more=("travel",))

    def run(out, resume=False, progress=None):
        job = replace(resolve_job(sc, None), state_dir=str(out / "fedavg_replay" / "seed_0" / "clients"))
        return serve(LoopbackGrid([0, 1], 2), job, out, tokens_of(job), resume=resume, progress=progress)

    def crash_at(run_name, phase, i, done, total):
        if (phase, i) == ("done_exp", 1):
            raise Crash

    with pytest.raises(Crash):
        run(tmp_path / "b", progress=crash_at)
    shutil.rmtree(tmp_path / "b" / "fedavg_replay" / "seed_0" / "clients")
    with pytest.raises(FederationError, match=r"cannot resume: 2 client\(s\) lost their continual-learning state, "
                                              r"e.g. client 0 trained 2 round\(s\) but its state \(.*client_0.pt\) holds 0"):
        run(tmp_path / "b", resume=True)


# ----------------------------------------------------------------------------- many clients
def test_a_worker_partitions_each_split_once_for_all_clients(monkeypatch):
    """A worker process serving many clients partitions every split once (all clients at once),
    not once per client, and a client's shards are exactly its rows of those partitions."""
    from clsim.federated import partition, worker
    from clsim.federated.partition import TEST, TRAIN, partition_rows

    worker.clear()
    calls = []
    real = partition.partition_rows
    monkeypatch.setattr(worker, "partition_rows", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    job = resolve_job(fed_scenario(clients=5, partition={"kind": "dirichlet", "alpha": 0.5, "min_partition_size": 0}))
    tokens = worker.stream_tokens(job)
    shards = [worker.client_tokens(job, c) for c in range(5)]
    assert calls == [5] * 4  # 2 experiences x (train, test), each for the 5 clients at once
    from clsim.data import derive_seed
    for i, split in enumerate(tokens.train):
        rows = partition_rows(split.labels, job.fed.partition, 5, derive_seed(0, i, TRAIN))
        for c in range(5):
            assert [tuple(x) for x in shards[c].train[i].ids] == [tuple(split.ids[r]) for r in rows[c]]
            assert shards[c].train[i].labels.tolist() == split.labels[rows[c]].tolist()
    for i, split in enumerate(tokens.test):
        rows = partition_rows(split.labels, job.fed.partition, 5, derive_seed(0, i, TEST))
        assert [len(shards[c].test[i].labels) for c in range(5)] == [len(r) for r in rows]
    with pytest.raises(ValueError, match=r"partition-id=5 is not a client of strategy 'fedavg': it has 5 clients"):
        worker.client_tokens(job, 5)


@pytest.mark.parametrize("n, clients", [(600, 40), (30, 40), (43, 7)])
def test_rows_read_at_once_equal_flower_datasets_load_partition(n, clients):
    """All partitions at once (IID shards by Dataset.shard's arithmetic, Dirichlet's own mapping)
    are exactly what the partitioners' load_partition selects one by one."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    from clsim.federated.partition import partition_rows
    from clsim.federated.schema import DirichletPartition, IidPartition

    labels = np.random.default_rng(1).integers(0, 3, n)
    ds = Dataset.from_dict({"row": np.arange(n), "label": labels})
    iid = IidPartitioner(clients)
    iid.dataset = ds.shuffle(seed=5)
    fast = partition_rows(labels, IidPartition(kind="iid"), clients, seed=5)
    for pid in range(clients):
        want = sorted(iid.load_partition(pid)["row"]) if pid < n else []  # Dataset.shard past the end raises
        assert fast[pid].tolist() == want
    if n >= clients:
        cfg = DirichletPartition(kind="dirichlet", alpha=0.3, min_partition_size=0)
        fast = partition_rows(labels, cfg, clients, seed=5)
        part = DirichletPartitioner(clients, partition_by="label", alpha=0.3, min_partition_size=0, seed=5)
        part.dataset = ds
        for pid in range(clients):
            assert fast[pid].tolist() == sorted(part.load_partition(pid)["row"])


def test_a_dirichlet_split_that_cannot_be_met_names_the_split_and_what_to_change():
    from clsim.federated.partition import partition_rows
    from clsim.federated.schema import DirichletPartition

    labels = np.random.default_rng(0).integers(0, 3, 300)
    cfg = DirichletPartition(kind="dirichlet", alpha=0.05, min_partition_size=5)
    with pytest.raises(ConfigError) as err:
        partition_rows(labels, cfg, 30, seed=0, where="'food' train")
    assert err.value.field == "federated.partition"
    assert "'food' train (300 rows) into 30 clients" in err.value.message and "min_partition_size=5" in err.value.message
    parts = partition_rows(labels, cfg, 30, seed=0, test=True)  # a test split is relaxed instead
    assert sorted(np.concatenate(parts).tolist()) == list(range(300))
    with pytest.raises(ConfigError, match=r"'food' test has 20 rows for 30 clients: a Dirichlet partition needs more"):
        partition_rows(labels[:20], cfg, 30, seed=0, test=True, where="'food' test")


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_a_reused_worker_model_trains_exactly_like_a_fresh_one(finetune):
    """Client 1's round in a worker that just served client 0 (the same model object, loaded with
    the global arrays) equals client 1's round on a freshly built Learner."""
    from clsim.federated import worker
    from clsim.federated.state import dump_strategy
    from clsim.learner import Learner

    job = resolve_job(fed_scenario("fedavg_replay", model={"finetune": finetune}))
    arrays = to_record(global_model(job))
    worker.clear()
    replies = {}
    for c in (0, 1):
        ctx = context(c)
        join(job, ctx)
        replies[c] = train_round(ctx, arrays, 1)
    model = worker.shared_model(job.scenario.model, 3, job.scenario.seed, "cpu")
    assert all(p.grad is None for p in model.parameters())  # released after the message

    fresh = Learner(job.scenario, job.spec, worker.client_tokens(job, 1))
    load_record(fresh.model, arrays)
    fresh.train_experience(0)
    got, want = replies[1].content["arrays"], to_record(fresh.model)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name].numpy(), want[name].numpy(), err_msg=name)
    assert float(replies[1].content["metrics"]["train-loss"]) == pytest.approx(fresh.probe.loss[-1], abs=0)
    assert dump_strategy(fresh)  # (the state a file would hold)


def test_client_state_lives_in_its_file_not_in_memory(tmp_path):
    """With a state folder, nothing of a client's CL state stays in context.state (1,000 clients'
    buffers would sit in the simulation's memory); a fresh start drops a stale file."""
    from dataclasses import replace

    from clsim.federated.state import KEY, ClientState

    job = replace(resolve_job(fed_scenario("fedavg_replay")), state_dir=str(tmp_path))
    ctx = context(1)
    join(job, ctx)
    train_round(ctx, to_record(global_model(job)), 1)
    assert KEY not in ctx.state
    state = ClientState.read(tmp_path / "client_1.pt")
    assert state.rounds == 1 and state.latest
    ctx2 = context(1)
    record = job.to_record()
    record["from-round"] = 2  # a resumed federation: the file is kept and reported
    from clsim.federated.client_app import app
    reply = app(Message(RecordDict({"job": record}), dst_node_id=ctx2.node_id, message_type=MessageType.QUERY), ctx2)
    assert reply.content["client"]["rounds-trained"] == 1
    join(job, ctx2)  # from-round 1: the federation starts over
    assert not (tmp_path / "client_1.pt").exists()


def test_a_node_with_its_own_state_dir_keeps_state_per_run_and_strategy(tmp_path):
    from clsim.federated.state import state_file

    job = resolve_job(fed_scenario()).in_run(tmp_path / "results" / "fed_unit" / "r1")
    assert job.state_dir == str((tmp_path / "results" / "fed_unit" / "r1" / "fedavg" / "seed_0" / "clients").resolve())
    assert job.run == "fed_unit/r1"
    assert state_file(job.state_dir, job.run, job.name, {}, 3) == Path(job.state_dir) / "client_3.pt"
    node = {"partition-id": 3, "state-dir": str(tmp_path / "node")}
    assert state_file(job.state_dir, job.run, "fedavg/seed_0", node, 3) == \
        tmp_path / "node" / "fed_unit" / "r1" / "fedavg" / "seed_0" / "client_3.pt"
    assert state_file("", "", "fedavg", {}, 3) is None  # no folder anywhere: context.state
    back = Job.from_record(job.to_record())
    assert (back.state_dir, back.run) == (job.state_dir, job.run)


def test_client_lag_spread_over_many_clients():
    from clsim.federated.schema import FederatedConfig

    fed = FederatedConfig(clients=100, client_lag={"max": 2})
    lags = [fed.lag(c) for c in range(100)]
    assert lags == [0] * 34 + [1] * 33 + [2] * 33 and fed.max_lag == 2
    assert fed.client_experience(99, 1) == 0 and fed.client_experience(99, 4) == 2 and fed.client_experience(0, 4) == 4
    assert FederatedConfig(clients=2, client_lag=[0, 1]).max_lag == 1 and FederatedConfig(clients=2).max_lag == 0
    with pytest.raises(ConfigError) as err:  # longer than the stream, in the compact form too
        resolve({"preset": "fedavg", "clients": 100, "client_lag": {"max": 2}}, "s.yaml", 0, experiences=2)
    assert err.value.field == "strategies[0].client_lag" and "2 is longer than the stream of 2" in err.value.message
    with pytest.raises(ConfigError) as err:
        resolve({"preset": "fedavg", "clients": 3, "client_lag": [0, 1]}, "s.yaml", 0)
    assert "one entry per client (3), got 2" in err.value.message and "{max: K}" in err.value.message
    assert resolve({"preset": "fedavg", "clients": 4, "client_lag": {"max": 1}}, "s.yaml", 0).hparams()[
        "federated.client_lag"] == "max 1, spread"


# ----------------------------------------------------------------------------- bad input
def test_unknown_server_strategy_parameter_exits_2_at_validate(tmp_path):
    from typer.testing import CliRunner

    from clsim.cli import app

    sc = {"name": "bad", "stream": {"source": "synthetic", "experiences": ["food", "tech"], "train_per_experience": 12,
                                    "test_per_experience": 6},
          "model": {"pretrained": "tiny", "max_length": 16},
          "strategies": [{"preset": "fedavg", "server_params": {"fraction_fit": 0.5}}]}
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(sc))
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    (line,) = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert f"{path}: strategies[0].server_params.fraction_fit: unknown parameter for FedAvg" in line
    assert "fraction_train" in line  # what it accepts


@pytest.mark.parametrize("nodes, parts, match", [
    ([0, 1, 2], 3, r"num-partitions=3 but strategy 'fedavg' has 2 clients"),  # more nodes than clients
    ([0, 1, 1], 2, r"two SuperNodes claim partition-id=1 \(\d+ and \d+\): this strategy has 2 clients"),
])
def test_nodes_that_disagree_with_the_strategy_are_refused_by_name(nodes, parts, match):
    from flwr.app import Error

    from clsim.federated.fleet import FederationError, Fleet

    class ErrorReplies(LoopbackGrid):  # as a SuperLink does: a ClientApp that raises becomes an error reply
        def __init__(self, clients, num_partitions, lie=None):
            super().__init__(clients, num_partitions)

        def send_and_receive(self, messages, *, timeout=None):
            out = []
            for m in messages:
                try:
                    out.extend(super().send_and_receive([m], timeout=timeout))
                except Exception as exc:
                    out.append(Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=m))
            return out

    job = resolve_job(fed_scenario())
    with pytest.raises(FederationError, match=match):
        Fleet(ErrorReplies(nodes, parts), 2, node_timeout=5).discover(job.to_record())


def test_a_node_whose_partition_id_is_out_of_range_is_refused_by_name():
    from clsim.federated.client_app import app

    job = resolve_job(fed_scenario())
    ctx = context(2, 2)
    msg = Message(RecordDict({"job": job.to_record()}), dst_node_id=ctx.node_id, message_type=MessageType.QUERY)
    with pytest.raises(ValueError, match=r"partition-id=2 is not a client of strategy 'fedavg': it has 2 clients"):
        app(msg, ctx)


def test_flwr_run_config_names_a_run_to_resume(tmp_path):
    from clsim.federated.server_app import job_from_run_config
    from clsim.results import write_plan

    job = resolve_job(fed_scenario())
    run = tmp_path / "fed_unit" / "r1"
    write_plan(job.plan, run)
    for cfg in ({"plan": str(run / "plan.json"), "resume": True}, {"resume": str(run)},
                {"plan": str(run / "plan.json"), "resume": "true"}):
        got, run_dir, resume = job_from_run_config(cfg)
        assert (got.name, run_dir, resume) == ("fedavg", run, True), cfg
        assert got.state_dir == str(run.resolve() / "fedavg" / "seed_0" / "clients") and got.run == "fed_unit/r1"
    assert job_from_run_config({"plan": str(run / "plan.json"), "resume": False})[2] is False
    with pytest.raises(ConfigError, match="needs the run folder"):
        job_from_run_config({"resume": True, "scenario": "x.yaml"})
    with pytest.raises(ConfigError, match="not a clsim run folder|no run folder"):
        job_from_run_config({"resume": str(tmp_path / "nowhere")})


def test_flowers_message_pump_skips_nodes_without_messages(monkeypatch):
    """The simulation's link state answers at once for a node with nothing pending and hands every
    other ask to Flower's own get_message_ins unchanged; a message stored after the pending set was
    built is still found (the set is rebuilt after every store and every delivery)."""
    from types import SimpleNamespace

    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    from clsim.federated.linkstate import skip_idle_nodes

    asked = []

    def flowers(self, node_id, limit, *, run_id=None):
        asked.append(node_id)
        found = [m for m in self.message_ins_store.values()
                 if m.metadata.dst_node_id == node_id and m.metadata.delivered_at == ""][:limit]
        for m in found:
            m.metadata.delivered_at = "2026-01-01T00:00:01"
        return found

    def flowers_store(self, message):
        self.message_ins_store[message.metadata.message_id or str(id(message))] = message

    monkeypatch.setattr(InMemoryLinkState, "get_message_ins", flowers)
    monkeypatch.setattr(InMemoryLinkState, "store_message_ins", flowers_store)
    assert skip_idle_nodes() and skip_idle_nodes()  # once, however often it is asked
    waiting = Message(RecordDict(), dst_node_id=7, message_type=MessageType.TRAIN)
    delivered = Message(RecordDict(), dst_node_id=8, message_type=MessageType.TRAIN)
    delivered.metadata.delivered_at = "2026-01-01T00:00:00"
    state = SimpleNamespace(message_ins_store={"a": waiting, "b": delivered})
    pump, store = InMemoryLinkState.get_message_ins, InMemoryLinkState.store_message_ins
    assert [pump(state, n, 1) for n in (7, 8, 9)] == [[waiting], [], []]
    assert asked == [7]
    assert [pump(state, n, 1) for n in (7, 8, 9)] == [[], [], []] and asked == [7]  # delivered: idle again
    late = Message(RecordDict(), dst_node_id=9, message_type=MessageType.TRAIN)
    store(state, late)  # after the set was built
    assert [pump(state, n, 1) for n in (7, 8, 9)] == [[], [], [late]] and asked == [7, 9]


@pytest.mark.parametrize("anchor", ["local", "global"])
def test_federated_ewc_anchors_at_the_clients_own_or_the_global_weights(anchor, tmp_path):
    """After experience 0 (two rounds), each client's EWC anchor for it is its own last local
    weights (``local``: the two clients' anchors differ) or the global model it received at the
    first round of experience 1 (``global``: one anchor, shared by both clients), and it stays put
    through experience 1's second round."""
    import io
    from dataclasses import replace

    import torch

    from clsim.federated.server import serve
    from clsim.federated.state import ClientState

    sc = fed_scenario("fedavg_ewc", rounds_per_experience=2, ewc_anchor=anchor)
    job = replace(resolve_job(sc, None), state_dir=str(tmp_path / "clients"))
    doc = serve(LoopbackGrid([0, 1], 2), job, tmp_path, tokens_of(job))
    assert doc["complete"] and doc["rounds"] == 4

    def anchors(client: int) -> tuple[dict, dict]:
        """Experience 0's EWC anchor before experience 1 (``base``) and after its last round (``latest``)."""
        state = ClientState.read(tmp_path / "clients" / f"client_{client}.pt")
        assert state.experience == 1 and state.rounds == 4
        out = []
        for blob in (state.base, state.latest):
            (ewc,) = [p["state"] for p in torch.load(io.BytesIO(blob), weights_only=True)["plugins"]
                      if p["class"] == "EWCPlugin"]
            out.append(ewc["saved_params"][0])
        return tuple(out)

    (base0, latest0), (base1, latest1) = anchors(0), anchors(1)
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(base0, latest0) and same(base1, latest1)  # experience 1's rounds kept experience 0's anchor
    assert same(base0, base1) == (anchor == "global")


def test_global_ewc_anchors_need_clients_that_run_ewc_and_move_once():
    """``ewc_anchor: global`` on clients without EWC is refused naming the field; an anchor moves
    once per trained experience (a client with no data for an experience keeps its latest key)."""
    from types import SimpleNamespace

    import torch
    from avalanche.training.plugins import EWCPlugin

    from clsim.federated.anchors import anchor_at_current_weights

    with pytest.raises(ConfigError, match=r"strategies\[0\]\.ewc_anchor: .*clients run no EWC"):
        resolve_job(fed_scenario("fedavg", ewc_anchor="global"))
    assert resolve_job(fed_scenario("fedavg_ewc", ewc_anchor="global")).fed.ewc_anchor == "global"

    model = torch.nn.Linear(2, 1)
    ewc = EWCPlugin(ewc_lambda=1.0)
    ewc.saved_params[0] = {"weight": torch.zeros(1, 2)}
    strategy = SimpleNamespace(plugins=[ewc], model=model)
    assert anchor_at_current_weights(strategy, after=-1) == 0
    assert torch.equal(ewc.saved_params[0]["weight"].data, model.weight.data)
    ewc.saved_params[0] = {"weight": torch.zeros(1, 2)}
    assert anchor_at_current_weights(strategy, after=0) is None  # experience 0 already moved
    assert torch.equal(ewc.saved_params[0]["weight"], torch.zeros(1, 2))
    assert anchor_at_current_weights(SimpleNamespace(plugins=[], model=model), after=-1) is None
