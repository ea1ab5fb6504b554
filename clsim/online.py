"""The online (prequential) protocol as a ``clsim.lifecycle.Trainer``.

Experience 0 is the deployment: the strategy's learner fine-tunes on its training split with the
usual recipe, as in the experiences protocol (the same model for every strategy of a seed).
Experiences 1..T−1 then *arrive* (``clsim.data.arrivals``): ``train_experience(i)`` runs the
time steps of experience i's segment, and at each step

1. the arriving batch is predicted by the model in service (batched, no gradients) and scored
   — its confusion matrix and mean confidence are recorded before anything learns from it;
2. the labels that become available now (``label_delay`` steps after their arrival, for the
   ``label_fraction`` of arrivals that ever get one) are revealed;
3. the strategy's ``OnlinePolicyPlugin`` (``clsim.strategies.plugins.online_policy``) is fed
   its signal and decides: learn from the revealed batch (``batch``: one pass, no probe,
   constant learning rate), re-fine-tune on the recent labelled window (``periodic``,
   ``drift``: the full recipe), or nothing (``never``).

Latency model: training happens between time steps and the new model serves from the next
step on; its wall time is charged to the step that triggered it (``train_seconds`` per step).
A model in production would serve the stale one while it trains; here no arrival waits.

At each experience boundary the lifecycle evaluates the usual row of R on the test sets, so both
views of one run agree, and checkpoints, resume and seeds work as for any run. The trainer adds
the online record to the metrics document (``extra``: every step's scores, alarms, updates and
labels read; the summary of ``clsim.online_metrics``), per-step TensorBoard scalars in
``<run>/<strategy>/seed_<k>/online/`` (accuracy over time, drift points, alarms and refits as
scalars and text), and a checkpoint every ``CHECKPOINT_EVERY`` steps mid-segment, so a resume
continues mid-stream and ends as an uninterrupted run would.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
from avalanche.benchmarks.scenarios.task_aware import with_task_labels

from clsim import online_metrics as OM
from clsim.data import derive_seed
from clsim.data.arrivals import Arrivals, arrivals
from clsim.evaluation import confusion
from clsim.learner import Learner, deterministic_mode, seed_everything
from clsim.lifecycle import Lifecycle, ProgressFn, run
from clsim.models import pooled_features
from clsim.precision import autocast
from clsim.sinks import TensorBoardSink
from clsim.strategies.plugins import LinearProbePlugin, OnlinePolicyPlugin, WarmupSchedulePlugin

CHECKPOINT_EVERY = 10  # time steps between mid-segment checkpoints
FIT_PURPOSE = 0x0F1  # derive_seed purpose of the RNG seeded before each training call


def stream_arrivals(scenario, tokens) -> Arrivals:
    """The arrivals of this scenario's stream for its seed (sizes from the tokenised splits)."""
    st = scenario.stream
    return arrivals([len(s.labels) for s in tokens.train], st.arrival_batch, scenario.seed,
                    gradual=st.transition.kind == "gradual", width=st.transition.width,
                    label_delay=st.label_delay, label_fraction=st.label_fraction)


@contextlib.contextmanager
def small_steps(strategy):
    """An online update: one pass over the batch, no linear probe, a constant learning rate."""
    saved = [(strategy, "train_epochs", strategy.train_epochs)]
    for p in strategy.plugins:
        if isinstance(p, LinearProbePlugin):
            saved.append((p, "epochs", p.epochs))
        if isinstance(p, WarmupSchedulePlugin):
            saved += [(p, "warmup", p.warmup), (p, "schedule", p.schedule)]
    for obj, key, _ in saved:
        setattr(obj, key, {"train_epochs": 1, "epochs": 0, "warmup": 0.0, "schedule": "constant"}[key])
    try:
        yield
    finally:
        for obj, key, value in saved:
            setattr(obj, key, value)


class OnlineTrainer:
    def __init__(self, life: Lifecycle, scenario, spec, tokens, device: str = "cpu"):
        self.life, self.tokens, self.device, self.seed = life, tokens, device, scenario.seed
        self.learner = Learner(scenario, spec, tokens, device=device)
        self.policy: OnlinePolicyPlugin | None = self.learner.plugin(OnlinePolicyPlugin)
        self.update = self.policy.update if self.policy else "batch"
        self.arr = stream_arrivals(scenario, tokens)
        offsets = np.cumsum([0] + [len(s.labels) for s in tokens.train])[:-1]
        self.sample_ids = offsets[self.arr.experience] + self.arr.position  # ids into the learner's stream
        self.labels = np.asarray([tokens.train[e].labels[p] for e, p in zip(self.arr.experience, self.arr.position)],
                                 dtype=np.int64)
        n = len(self.arr.step)
        self.pred, self.conf = np.full(n, -1, dtype=np.int64), np.zeros(n)  # at arrival, by the model in service
        self.consumed = np.zeros(n, dtype=bool)  # labels the strategy read (to train, or to feed its detector)
        self.steps: list[dict] = []  # the online record
        self.step = 0  # the next time step to serve
        self.deploy_seconds = self.serve_seconds = 0.0
        self.resumed = False
        self.tb: TensorBoardSink | None = None

    # ------------------------------------------------------------------ the two seams: serve and learn
    @torch.no_grad()
    def predict(self, idx: np.ndarray) -> np.ndarray:
        """Class probabilities of the model in service for arrivals ``idx`` (eval mode, no gradients)."""
        L, train = self.learner, self.learner.spec.train
        if L.cached:
            X = torch.stack([L.train_features[e][p] for e, p in zip(self.arr.experience[idx], self.arr.position[idx])])
        else:
            ids = [self.tokens.train[e].ids[p] for e, p in zip(self.arr.experience[idx], self.arr.position[idx])]
            X = pooled_features(L.model, ids, train.eval_batch_size, self.device, train.precision)
        head = L.model.head
        with autocast(self.device, train.precision):
            logits = head(X.to(self.device)).float()
        return torch.softmax(logits, dim=-1).cpu().numpy()

    def fit(self, idx: np.ndarray, step: int, refit: bool) -> tuple[float, int]:
        """Train the strategy on arrivals ``idx`` (one Avalanche training call); seconds and samples."""
        L = self.learner
        self.consumed[idx] = True
        data = L.decode(torch.as_tensor(self.sample_ids[idx], dtype=torch.long))
        exp = with_task_labels(DatasetExperience(dataset=data, current_experience=len(L.probe.samples)))
        seed_everything(derive_seed(self.seed, step, FIT_PURPOSE))
        t0 = time.perf_counter()
        if refit:
            self.policy.refitting = True
            try:
                L.strategy.train(exp, eval_streams=[])
            finally:
                self.policy.refitting = False
        else:
            with small_steps(L.strategy):
                L.strategy.train(exp, eval_streams=[])
        return time.perf_counter() - t0, int(L.probe.samples[-1])

    # ------------------------------------------------------------------ Trainer
    def train_experience(self, i: int) -> None:
        if i == 0:  # the deployment fit
            t0 = time.perf_counter()
            self.learner.train_experience(0)
            self.deploy_seconds = time.perf_counter() - t0
            return
        seg = self.arr.segment_of(i)
        for t in range(max(self.step, seg.start), seg.stop):
            self._step(t)
            self.step = t + 1
            self.life.report("train", i, t + 1 - seg.start, len(seg))
            if (t + 1 - seg.start) % CHECKPOINT_EVERY == 0 and t + 1 < seg.stop:
                self._sink().flush()
                self.life.tb.flush()
                self.life.save(self)
        self._sink().flush()

    def _step(self, t: int) -> None:
        idx = self.arr.at(t)
        t0 = time.perf_counter()
        probs = self.predict(idx)
        self.serve_seconds += time.perf_counter() - t0
        self.pred[idx], self.conf[idx] = probs.argmax(axis=1), probs.max(axis=1)
        revealed = self.arr.revealed(t)
        alarm, signal = False, None
        if self.update == "drift":
            if self.policy.signal == "error":
                values = (self.pred[revealed] != self.labels[revealed]).astype(float)
                self.consumed[revealed] = True
            else:
                values = self.conf[idx]
            signal = float(values.mean()) if len(values) else None
            alarm = self.policy.observe(values)
        kind, seconds, samples = None, 0.0, 0
        if self.update == "batch" and len(revealed):
            kind = "batch"
            seconds, samples = self.fit(revealed, t, refit=False)
        elif self.policy is not None and self.policy.refits and self.policy.wants_refit(t, alarm):
            window = self.arr.labelled_by(t)[-self.policy.recent:]
            if len(window):
                kind = "refit"
                seconds, samples = self.fit(window, t, refit=True)
                self.policy.refitted(t)
        C = confusion(self.labels[idx], self.pred[idx], len(self.tokens.label_names))
        record = {"step": t, "experience": int(self.arr.experience[idx[-1]]), "n": int(len(idx)),
                  "new_share": float(self.arr.new_share[t]), "drift": t in self.arr.drift_points,
                  "confusion": C.tolist(), "confidence": float(self.conf[idx].mean()), "signal": signal,
                  "alarm": bool(alarm), "labels_revealed": int(len(revealed)), "update": kind,
                  "train_seconds": float(seconds), "samples": samples}
        self.steps.append(record)
        self._log(record)

    def _sink(self) -> TensorBoardSink:
        if self.tb is None:  # resuming: hide the steps an earlier attempt logged after its checkpoint
            self.tb = TensorBoardSink(Path(self.life.out) / "online", purge_step=self.step if self.resumed else None)
        return self.tb

    def _log(self, r: dict) -> None:
        tb, t = self._sink(), r["step"]
        C = r["confusion"]
        for tag, value in (("accuracy", OM.step_accuracy([C])[0]), ("balanced_accuracy", OM.step_balanced_accuracy([C])[0]),
                           ("confidence", r["confidence"]), ("signal", r["signal"]), ("alarm", float(r["alarm"])),
                           ("drift_point", float(r["drift"])), ("new_share", r["new_share"]),
                           ("train_seconds", r["train_seconds"])):
            tb.log_scalar(f"online/{tag}", value, t)
        events = [what for what, on in (("drift point", r["drift"]), ("detector alarm", r["alarm"]),
                                         (f"update: {r['update']}", r["update"])) if on]
        if events:
            tb.log_text("online/events", f"step {t}: " + ", ".join(events), t)

    def evaluate(self) -> list:
        return self.learner.evaluate()

    def costs(self) -> dict:
        served = max(int(sum(s["n"] for s in self.steps)), 1)
        return {**self.learner.costs(), "deploy_seconds": self.deploy_seconds, "serve_seconds": self.serve_seconds,
                "serve_ms_per_arrival": 1000.0 * self.serve_seconds / served,
                **OM.online_costs(self.steps), "labels_consumed": int(self.consumed.sum())}

    def scalars(self, i: int) -> dict[str, float]:
        if i == 0:
            return self.learner.scalars(0)
        seg = [s["confusion"] for s in self.steps if s["experience"] == i]
        return {"online/segment_accuracy": OM.online_accuracy(seg),
                "cost/online_train_seconds": OM.online_costs(self.steps)["online_train_seconds"]}

    def extra(self) -> dict:
        summary = OM.summarize(self.steps, self.arr.drift_points, self.arr.steps, int(self.consumed.sum()),
                               detector=self.update == "drift")
        policy = {"update": self.update} if self.policy is None else {
            "update": self.update, "every": self.policy.every, "recent": self.policy.recent, "start": self.policy.start,
            "detector": self.policy.detector_name, "signal": self.policy.signal, "warmup": self.policy.warmup,
            "cooldown": self.policy.cooldown}
        return {"protocol": "online", **summary,
                "online": {"arrival_batch": self.arr.batch, "steps_total": self.arr.steps,
                           "drift_points": list(self.arr.drift_points),
                           "segments": [list(s) for s in self.arr.segments], "policy": policy, "steps": self.steps}}

    def state_dict(self) -> dict:
        return {"learner": self.learner.state_dict(), "step": self.step, "steps": self.steps,
                "pred": torch.as_tensor(self.pred), "conf": torch.as_tensor(self.conf),
                "consumed": torch.as_tensor(self.consumed), "deploy_seconds": self.deploy_seconds,
                "serve_seconds": self.serve_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state["learner"])
        self.step, self.steps = int(state["step"]), list(state["steps"])
        self.pred, self.conf = state["pred"].numpy().copy(), state["conf"].numpy().copy()
        self.consumed = state["consumed"].numpy().copy()
        self.deploy_seconds, self.serve_seconds = state["deploy_seconds"], state["serve_seconds"]
        self.resumed = True

    def resume_point(self) -> dict:
        return {"from_step": self.step}

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def run_online(plan, spec, tokens, run_dir: str | Path, device: str = "cpu", progress: ProgressFn | None = None,
               resume: dict | None = None) -> dict:
    """A central strategy run under the online protocol: an ``OnlineTrainer`` through the lifecycle."""
    deterministic_mode()
    life = Lifecycle(plan, spec, tokens, run_dir, resume, progress, device)
    trainers: list[OnlineTrainer] = []

    def make(life: Lifecycle) -> OnlineTrainer:
        trainers.append(OnlineTrainer(life, plan.scenario, spec, tokens, device))
        return trainers[-1]

    try:
        return run(life, make)
    finally:
        for tr in trainers:
            tr.close()
