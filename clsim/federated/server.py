"""A federation as a ``clsim.lifecycle.Trainer``: the server's side of a federated strategy run.

Each experience is ``rounds_per_experience`` rounds of a ``flwr.serverapp.strategy`` class,
unchanged: one call of its ``Strategy.start`` per experience, through the ``Fleet`` (which
numbers rounds across calls). The lifecycle evaluates the global model after each experience
(row k of R) exactly as for a central learner; this class adds what only a federation has —
the round log (bytes each way, clients sampled, trained and failed), the clients' own accuracy
on their test shards (local forgetting), and a checkpoint after every round (the global arrays,
the strategy's state and Python's ``random`` state, which Flower samples clients with), so a
resume continues mid-experience. Clients keep their own state next to it
(``clsim.federated.state``).
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flower_strategies

from clsim import metrics as M
from clsim.data import derive_seed
from clsim.evaluation import confusion_row
from clsim.federated import quiet_flower
from clsim.federated.arrays import load_record, to_record
from clsim.federated.fleet import FederationError, Fleet, RoundTraffic
from clsim.federated.job import Job
from clsim.federated.schema import FederatedConfig, server_params
from clsim.federated.server_state import load_server_strategy_state, server_strategy_state
from clsim.lifecycle import Lifecycle, run
from clsim.models import BottomCache, TokenizedStream, build_model, trainable_parameters

TRAIN, EVALUATE = "train", "evaluate"
SAMPLING_SEED = 0xF1  # derive_seed purpose of Flower's client sampling
SHARD_INFO = ("partition-id", "num-partitions", "train-sizes", "test-sizes")  # what clients_info reports


def build_server_strategy(fed: FederatedConfig):
    """The Flower strategy the preset names, unchanged (its class imported now)."""
    with quiet_flower():
        return getattr(flower_strategies, fed.server)(**server_params(fed))


def _nan_to_none(row):
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in row]


class FederatedServer:
    def __init__(self, life: Lifecycle, job: Job, grid: Grid, tokens: TokenizedStream, device: str):
        sc, fed = job.scenario, job.fed
        self.life, self.job, self.fed, self.tokens, self.device = life, job, fed, tokens, device
        self.model = build_model(sc.model, len(tokens.label_names), sc.seed).to(device)
        self.fleet = Fleet(grid, fed.clients, fed.node_timeout, reply_timeout=fed.round_timeout)
        self.strategy = build_server_strategy(fed)
        self.arrays = to_record(self.model)
        self.round = 0  # rounds finished
        self.rounds: list[dict] = []  # the round log
        self.client_rows: dict[int, list[list[float] | None]] = {c: [] for c in range(fed.clients)}
        self.eval_seconds = 0.0
        self.bottom = BottomCache()  # the frozen bottom's output on the test sets, kept between rounds
        self.t0 = time.perf_counter()
        self.restored = False
        if job.state_dir and not life.saved:  # starting over: no client may pick up an earlier attempt's state
            for f in Path(job.state_dir).glob("client_*.pt"):
                f.unlink()

    # ------------------------------------------------------------------ Trainer
    def train_experience(self, i: int) -> None:
        if not self.fleet.partition_of:
            record = self.job.to_record()
            record["from-round"] = self.round + 1  # 1: clients start over, dropping any earlier attempt's state
            self.fleet.discover(record)
            if self.restored:
                self._check_client_state()
            else:  # Flower's node sampling draws from `random`: seeded here, or restored
                random.seed(derive_seed(self.job.scenario.seed, SAMPLING_SEED))
        last = (i + 1) * self.fed.rounds_per_experience
        self.fleet.round_offset = self.round  # Strategy.start counts from 1; the Fleet tells clients the real round
        self.strategy.start(grid=self.fleet, initial_arrays=self.arrays, num_rounds=last - self.round,
                            timeout=self.fed.round_timeout, train_config=ConfigRecord(),
                            evaluate_config=ConfigRecord(), evaluate_fn=self._after_round)
        local = self.fleet.rounds.get(last, RoundTraffic(last)).replies.get(EVALUATE, {})
        for c, rows in self.client_rows.items():
            acc = local.get(c, {}).get("accuracy")
            rows.append(list(acc) if acc is not None else None)

    def _after_round(self, rnd: int, arrays: ArrayRecord) -> None:
        if rnd == 0:  # Strategy.start's look at the initial arrays: the lifecycle evaluates itself
            return None
        self.round = rnd + self.fleet.round_offset
        self.arrays = arrays
        self._round_done(self.round, self.fleet.rounds.get(self.round))
        rpe = self.fed.rounds_per_experience
        self.life.report("train", self.fed.experience_of_round(self.round), (self.round - 1) % rpe + 1, rpe)
        if not self.fed.ends_experience(self.round):  # mid-experience: checkpoint now (else the lifecycle does)
            self.life.tb.flush()
            self.life.save(self)
        return None

    def evaluate(self) -> list:
        load_record(self.model, self.arrays)
        t0 = time.perf_counter()
        train = self.job.spec.train
        row = confusion_row(self.model, self.tokens.test, len(self.tokens.label_names), train.eval_batch_size,
                            self.device, train.precision, self.bottom)
        self.eval_seconds += time.perf_counter() - t0
        return row

    def costs(self) -> dict:
        return {"train_seconds": float(sum(r["train_seconds"] for r in self.rounds)),
                "eval_seconds": float(self.eval_seconds),
                "samples_trained": int(sum(r["samples"] for r in self.rounds)),
                "trainable_params": int(trainable_parameters(self.model)),
                "wall_seconds": time.perf_counter() - self.t0,
                "bytes_total": int(sum(r["bytes_up"] + r["bytes_down"] for r in self.rounds))}

    def scalars(self, i: int) -> dict[str, float]:
        out = {}
        for c, rows in self.client_rows.items():
            if rows and rows[-1] is not None:
                out.update({f"client_{c}/accuracy/{name}": v for name, v in zip(self.tokens.names, rows[-1])})
        return out

    def extra(self) -> dict:
        fed = self.fed
        return {"federated": True, "server": fed.server, "clients_total": fed.clients, "rounds": len(self.rounds),
                "bytes_up": [r["bytes_up"] for r in self.rounds], "bytes_down": [r["bytes_down"] for r in self.rounds],
                "failures": int(sum(len(r["failures"]) for r in self.rounds)), "round_log": self.rounds,
                "clients": self._clients(),
                "clients_info": [{k: v for k, v in self.fleet.info.get(c, {}).items() if k in SHARD_INFO}
                                 for c in range(fed.clients)]}

    def state_dict(self) -> dict:
        return {"round": self.round, "arrays": dict(self.arrays.to_torch_state_dict()), "rounds": self.rounds,
                "client_rows": self.client_rows, "eval_seconds": self.eval_seconds,
                "wall_seconds": time.perf_counter() - self.t0, "server": server_strategy_state(self.strategy),
                "random": random.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.round, self.rounds = state["round"], list(state["rounds"])
        self.arrays = ArrayRecord(state["arrays"])
        self.client_rows = {int(c): list(rows) for c, rows in state["client_rows"].items()}
        self.eval_seconds = state["eval_seconds"]
        self.t0 -= state["wall_seconds"]
        load_server_strategy_state(self.strategy, state["server"])
        version, internal, gauss = state["random"]
        random.setstate((version, tuple(internal), gauss))
        self.restored = True
        for entry in self.rounds:  # round scalars at steps the lifecycle's purge hid: log them again
            if entry["round"] >= len(self.life.R):
                self._log_round(entry)

    def resume_point(self) -> dict:
        return {"from_round": self.round + 1}

    def _check_client_state(self) -> None:
        """A resumed federation needs every client's CL state as of the checkpoint (or a round later,
        if a client saved the round in flight): a client whose state has fewer rounds than it
        trained lost it (a wiped folder, a node moved to another machine) and would silently
        train from scratch, so the run stops and names it."""
        trained: dict[int, int] = {}
        for entry in self.rounds:
            for c in entry["clients_trained"]:
                trained[c] = trained.get(c, 0) + 1
        lost = [(c, n, int(self.fleet.info.get(c, {}).get("rounds-trained", 0)), self.fleet.info.get(c, {}).get("state"))
                for c, n in sorted(trained.items()) if int(self.fleet.info.get(c, {}).get("rounds-trained", 0)) < n]
        if lost:
            c, n, has, where = lost[0]
            raise FederationError(
                f"cannot resume: {len(lost)} client(s) lost their continual-learning state, e.g. client {c} trained "
                f"{n} round(s) but its state ({where}) holds {has}; the clients' state must survive with the run "
                f"(<run>/<strategy>/seed_<k>/clients/, or each SuperNode's state-dir)")

    # ------------------------------------------------------------------ rounds and clients
    def _round_done(self, rnd: int, t: RoundTraffic | None) -> None:
        """Traffic and client outcomes of one server round (TensorBoard step = round)."""
        t = t or RoundTraffic(rnd)
        trained = t.replies.get(TRAIN, {})
        entry = {"round": rnd, "experience": self.fed.experience_of_round(rnd), "bytes_down": t.bytes_down,
                 "bytes_up": t.bytes_up, "clients_sampled": t.sent.get(TRAIN, []), "clients_trained": sorted(trained),
                 "failures": t.failures,
                 "train_seconds": float(sum(m.get("train-seconds", 0.0) for m in trained.values())),
                 # Flower's overhead (clsim bench): the train phase's wall time vs its slowest client
                 "train_wall_seconds": float(t.seconds.get(TRAIN, 0.0)),
                 "slowest_client_train_seconds": float(max((m.get("train-seconds", 0.0) for m in trained.values()),
                                                           default=0.0)),
                 # what clients spent around training (learner, state, arrays): summed over the round's clients
                 "client_setup_seconds": float(sum(m.get("setup-seconds", 0.0) for m in trained.values())),
                 "samples": int(sum(m.get("samples", 0) for m in trained.values())),
                 "client_experience": {str(c): int(m.get("experience", -1)) for c, m in trained.items()}}
        losses = [m["train-loss"] for m in trained.values() if "train-loss" in m]
        entry["train_loss"] = float(np.mean(losses)) if losses else None
        self.rounds.append(entry)
        self._log_round(entry)

    def _log_round(self, e: dict) -> None:
        tb = self.life.tb
        for tag in ("bytes_down", "bytes_up", "train_loss"):
            tb.log_scalar(f"federated/{tag}", e[tag], e["round"])
        tb.log_scalar("federated/failures", len(e["failures"]), e["round"])
        tb.log_scalar("federated/clients_trained", len(e["clients_trained"]), e["round"])

    def _clients(self) -> list[dict]:
        out = []
        for c, rows in self.client_rows.items():
            doc = {"client": c, "accuracy_matrix": [_nan_to_none(r) if r else None for r in rows]}
            if rows and all(r is not None for r in rows):
                sub = [[float("nan") if v is None else v for v in r[: len(rows)]] for r in rows]
                doc.update({"acc": M.acc(sub), "bwt": M.bwt(sub), "forgetting": M.forgetting(sub)})
            out.append(doc)
        return out


def serve(grid: Grid, job: Job, run_dir: str | Path, tokens: TokenizedStream, device: str = "cpu",
          progress=None, resume: bool = False) -> dict:
    """Run the federated strategy of ``job`` on ``grid`` through the lifecycle; its metrics document.
    ``resume`` continues from the last round checkpoint when there is one, else starts over."""
    life = Lifecycle(job.plan, job.spec, tokens, run_dir, {"reason": "resume"} if resume else None, progress,
                     device)
    return run(life, lambda life: FederatedServer(life, job, grid, tokens, device))
