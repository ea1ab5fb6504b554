"""A client's continual-learning state <-> Flower's ``context.state``.

A ClientApp is called afresh for every message, so what a CL strategy carries from one
experience to the next — the replay buffer, EWC's importances and anchor weights, LwF's
previous model, Avalanche's clock, Cumulative's union of data — is saved into
``context.state`` after each round and restored before the next, as the same explicit
state dicts a checkpoint holds (see :mod:`clsim.strategies.state`).

Rounds and experiences differ: an experience may last several rounds. Every round restores
``base`` — the state from before the client's current experience — trains, and keeps the
result as ``latest``; when the client moves on to its next experience, ``latest`` becomes
the new ``base``. So the replay buffer gains each experience once, and EWC computes one
importance per experience, however many rounds it took.

Where it lives (:func:`state_file`): in a file per client, ``client_<i>.pt``, written atomically
after every round and read when the client is next sampled — in ``Job.state_dir`` (the run
folder's ``<strategy>/seed_<k>/clients/``, which ``clsim run`` and ``clsim flower launch`` set), or under
the SuperNode's own ``state-dir`` (node config: ``--node-config "... state-dir='/var/lib/clsim'"``,
for machines that do not share the run folder) in ``<state-dir>/<scenario>/<run id>/<strategy>/seed_<k>/``.
Only without either does it stay in Flower's ``context.state`` (not resumable). Files keep a
federation of 1,000 clients out of memory, and let a resumed federation's clients pick up where
they were. Restoring ``base`` every round makes this safe when a file is a round ahead of the
server's checkpoint: the re-done round starts from the same state as the first time.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ConfigRecord, RecordDict

from clsim.sinks import atomic_write_bytes

KEY = "clsim.cl_state"


def dump_strategy(learner) -> bytes:
    """The learner's CL state as bytes: the same explicit state dicts as a checkpoint
    (:func:`clsim.strategies.state.strategy_state`; buffers stored as sample ids)."""
    from clsim.strategies import state as cl_state  # here: Avalanche; a join message needs none of it

    buf = io.BytesIO()
    torch.save(cl_state.strategy_state(learner.strategy, learner.encode), buf)
    return buf.getvalue()


def load_strategy(learner, blob: bytes) -> None:
    """Restore :func:`dump_strategy`'s bytes into a freshly built learner of the same preset.
    Costs are per round, so the probe starts empty."""
    from clsim.strategies import state as cl_state  # here: as in dump_strategy

    state = torch.load(io.BytesIO(blob), weights_only=True)
    cl_state.load_strategy_state(learner.strategy, state, learner.decode)
    learner.probe.__init__(learner.probe.on_batch)


@dataclass
class ClientState:
    """The client's position in its stream and its CL state around the current experience."""

    experience: int = -1  # the client experience ``latest`` was trained on (-1: none yet)
    rounds: int = 0  # training rounds this client has completed
    base: bytes = b""  # CL state before ``experience`` (empty: fresh strategy)
    latest: bytes = b""  # CL state after the last round on ``experience``
    anchored: int = -1  # the last EWC experience whose anchor moved to the global model (``ewc_anchor: global``)

    def start_round(self, experience: int) -> bytes:
        """Move to ``experience`` if the client advanced; the state to train this round from."""
        if experience != self.experience:
            if self.experience >= 0:
                self.base = self.latest
            self.experience = experience
        return self.base

    def finish_round(self, latest: bytes) -> None:
        self.latest = latest
        self.rounds += 1

    def save(self, state: RecordDict) -> None:
        state[KEY] = ConfigRecord({"experience": self.experience, "rounds": self.rounds,
                                   "base": self.base, "latest": self.latest, "anchored": self.anchored})

    @classmethod
    def load(cls, state: RecordDict) -> "ClientState":
        if KEY not in state:
            return cls()
        rec = state[KEY]
        return cls(int(rec["experience"]), int(rec["rounds"]), bytes(rec["base"]), bytes(rec["latest"]),
                   int(rec.get("anchored", -1)))

    def write(self, path: Path) -> None:
        """Atomically to ``path`` (weights_only-loadable: the blobs as uint8 tensors)."""
        blob = lambda b: torch.frombuffer(bytearray(b), dtype=torch.uint8) if b else torch.empty(0, dtype=torch.uint8)  # noqa: E731
        buf = io.BytesIO()
        torch.save({"experience": self.experience, "rounds": self.rounds, "base": blob(self.base),
                    "latest": blob(self.latest), "anchored": self.anchored}, buf)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def read(cls, path: Path) -> "ClientState":
        """What :meth:`write` left at ``path``; a fresh state if there is no file."""
        if not Path(path).is_file():
            return cls()
        d = torch.load(path, weights_only=True)
        return cls(int(d["experience"]), int(d["rounds"]), d["base"].numpy().tobytes(), d["latest"].numpy().tobytes(),
                   int(d.get("anchored", -1)))


def client_file(state_dir: str | Path, client: int) -> Path:
    return Path(state_dir) / f"client_{client}.pt"


NODE_STATE_DIR = "state-dir"  # node config key: this SuperNode's own folder for its clients' state


def state_file(state_dir: str, run: str, strategy: str, node_config, client: int) -> Path | None:
    """Where client ``client`` keeps its CL state: under the node's ``state-dir`` if its node config
    names one, else in the job's ``state_dir``; ``None``: in ``context.state`` only."""
    node_dir = str(node_config.get(NODE_STATE_DIR, "") or "")
    if node_dir:
        return client_file(Path(node_dir).expanduser() / (run or "_") / strategy, client)
    return client_file(state_dir, client) if state_dir else None
