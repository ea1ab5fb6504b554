"""Server-side results of a federated run, in the same layout as every central strategy.

After the last round of each experience the recorder gets the global model's row of R and
the round traffic the Fleet saw; it writes ``<run_dir>/<strategy>/metrics.json`` (R, zero
shot, costs, plus ``bytes_up``/``bytes_down`` per round, ``rounds``, ``failures`` and the
per-client matrices of local accuracy) and TensorBoard events through ``clsim.sinks``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from clsim import metrics as M
from clsim.federated.fleet import Fleet, RoundTraffic
from clsim.sinks import TensorBoardSink, write_strategy_results

TRAIN, EVALUATE = "train", "evaluate"


def _nan_to_none(row):
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in row]


class Recorder:
    """``state`` (a resumed run): what :meth:`state_dict` saved; TensorBoard then hides whatever
    the interrupted attempt logged after that point (with no state, everything it logged)."""

    STATE = ("z", "R", "rounds", "client_rows", "eval_seconds", "resumes")

    def __init__(self, job, names: list[str], run_dir: str | Path, trainable_params: int, state: dict | None = None):
        self.job, self.names = job, list(names)
        self.out = Path(run_dir) / job.name
        purge = len(state["R"]) if state else 0  # TensorBoard steps: experiences, and rounds for federated/*
        self.tb = TensorBoardSink(self.out, purge_step=purge if self.out.is_dir() else None)
        self.trainable_params = trainable_params
        self.z: list[float] = []
        self.R: list[list[float]] = []
        self.rounds: list[dict] = []  # one entry per server round
        self.client_rows: dict[int, list[list[float] | None]] = {c: [] for c in range(job.fed.clients)}
        self.eval_seconds = 0.0
        self.resumes: list[dict] = []
        self.t0 = time.perf_counter()
        self.doc: dict = {}
        if state:
            for key in self.STATE:
                setattr(self, key, state[key])
            self.t0 -= state["wall_seconds"]
            for entry in self.rounds:  # round scalars at steps the purge hid: log them again
                if entry["round"] >= purge:
                    self._log_round(entry)

    def state_dict(self) -> dict:
        """Results so far, as plain containers (a federated checkpoint)."""
        return {**{key: getattr(self, key) for key in self.STATE}, "wall_seconds": time.perf_counter() - self.t0}

    def zero_shot(self, z: list[float], seconds: float) -> None:
        self.z = list(z)
        self.eval_seconds += seconds
        self.tb.log_zero_shot(self.z, self.names)

    def round_done(self, rnd: int, experience: int, t: RoundTraffic | None) -> None:
        """Traffic and client outcomes of one server round (TensorBoard step = round)."""
        t = t or RoundTraffic(rnd)
        trained = t.replies.get(TRAIN, {})
        entry = {"round": rnd, "experience": experience, "bytes_down": t.bytes_down, "bytes_up": t.bytes_up,
                 "clients_sampled": t.sent.get(TRAIN, []), "clients_trained": sorted(trained),
                 "failures": t.failures,
                 "train_seconds": float(sum(m.get("train-seconds", 0.0) for m in trained.values())),
                 # Flower's overhead (clsim bench): the train phase's wall time vs its slowest client
                 "train_wall_seconds": float(t.seconds.get(TRAIN, 0.0)),
                 "slowest_client_train_seconds": float(max((m.get("train-seconds", 0.0) for m in trained.values()),
                                                           default=0.0)),
                 "samples": int(sum(m.get("samples", 0) for m in trained.values())),
                 "client_experience": {str(c): int(m.get("experience", -1)) for c, m in trained.items()}}
        losses = [m["train-loss"] for m in trained.values() if "train-loss" in m]
        entry["train_loss"] = float(np.mean(losses)) if losses else None
        self.rounds.append(entry)
        self._log_round(entry)

    def _log_round(self, e: dict) -> None:
        for tag in ("bytes_down", "bytes_up", "train_loss"):
            self.tb.log_scalar(f"federated/{tag}", e[tag], e["round"])
        self.tb.log_scalar("federated/failures", len(e["failures"]), e["round"])
        self.tb.log_scalar("federated/clients_trained", len(e["clients_trained"]), e["round"])

    def experience_done(self, k: int, row: list[float], seconds: float, t: RoundTraffic | None) -> dict:
        """The global row R[k] and every client's local row after the last round of experience k."""
        self.R.append(list(row))
        self.eval_seconds += seconds
        local = (t.replies.get(EVALUATE, {}) if t else {})
        for c in self.client_rows:
            acc = local.get(c, {}).get("accuracy")
            self.client_rows[c].append(list(acc) if acc is not None else None)
            if acc is not None:
                for name, v in zip(self.names, acc):
                    self.tb.log_scalar(f"client_{c}/accuracy/{name}", v, k)
        self.doc = self._document()
        self.tb.log_row(k, row, self.names, {m: v[-1] for m, v in self.doc["running"].items()})
        write_strategy_results(self.out, self.doc)
        return self.doc

    def _clients(self) -> list[dict]:
        out = []
        for c, rows in self.client_rows.items():
            doc = {"client": c, "accuracy_matrix": [_nan_to_none(r) if r else None for r in rows]}
            if rows and all(r is not None for r in rows):
                sub = [[float("nan") if v is None else v for v in r[: len(rows)]] for r in rows]
                doc.update({"acc": M.acc(sub), "bwt": M.bwt(sub), "forgetting": M.forgetting(sub)})
            out.append(doc)
        return out

    def _document(self) -> dict:
        from clsim.runner import strategy_metrics

        spec, fed = self.job.spec, self.job.fed
        costs = {"train_seconds": float(sum(r["train_seconds"] for r in self.rounds)),
                 "eval_seconds": float(self.eval_seconds),
                 "samples_trained": int(sum(r["samples"] for r in self.rounds)),
                 "trainable_params": int(self.trainable_params),
                 "wall_seconds": time.perf_counter() - self.t0,
                 "bytes_total": int(sum(r["bytes_up"] + r["bytes_down"] for r in self.rounds))}
        extra = {"federated": True, "server": fed.server, "clients_total": fed.clients,
                 "rounds": len(self.rounds),
                 "bytes_up": [r["bytes_up"] for r in self.rounds],
                 "bytes_down": [r["bytes_down"] for r in self.rounds],
                 "failures": int(sum(len(r["failures"]) for r in self.rounds)),
                 "round_log": self.rounds, "clients": self._clients(), "resumes": self.resumes}
        return strategy_metrics(spec.name, self.names, self.z, self.R, costs, self.hparams(), extra)

    def hparams(self) -> dict:
        sc = self.job.scenario
        return {"strategy": self.job.name, **self.job.spec.hparams(), "finetune": sc.model.finetune,
                "lr": sc.train.lr, "epochs": sc.train.epochs, "batch_size": sc.train.batch_size,
                "precision": sc.train.precision, "seed": sc.seed}

    def finish(self, fleet: Fleet | None = None) -> dict:
        """Close the TensorBoard log (matrix heatmap, hparams) and return the metrics document."""
        doc = self.doc or self._document()
        if fleet is not None:
            doc["clients_info"] = [fleet.info.get(c, {}) for c in range(self.job.fed.clients)]
            write_strategy_results(self.out, doc)
        if self.R:
            self.tb.log_matrix(np.asarray(self.R), self.names, len(self.R) - 1)
            self.tb.log_hparams(self.hparams(), {f"hparam/{k}": doc.get(k) for k in M.NAMES}
                                | {"hparam/train_seconds": doc["costs"]["train_seconds"],
                                   "hparam/bytes_total": doc["costs"]["bytes_total"]})
        self.tb.close()
        return doc

    def close(self) -> None:
        self.tb.close()
