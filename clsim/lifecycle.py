"""One strategy run, experience by experience — the same loop for a central learner and a
federation.

A ``Trainer`` trains on experience *i* and evaluates the model in service on every test set
(confusion matrices, ``clsim.evaluation``): a
``clsim.learner.Learner`` in a Ray actor, or a federation's server (``clsim.federated.server``).
:func:`run` does the bookkeeping around it, once for both:

- resume: the checkpoint of an interrupted attempt (checked against the run's fingerprint) puts
  the trainer and the results so far back; a run that had finished just returns its document;
- the zero-shot row before any training;
- after each experience: row *i* (accuracy, balanced accuracy, the confusion matrices) to
  TensorBoard and ``metrics.json``, then a checkpoint;
- after the last: the heatmap and the hparams entry, and a checkpoint that keeps only the
  finished document (nothing is left to resume).

One lifecycle is one (strategy, seed) run, in ``<run>/<strategy>/seed_<k>/``.

A crash loses at most the experience in flight (a federation checkpoints after every round:
it asks through ``Lifecycle.save``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Protocol

from clsim import checkpoint
from clsim import metrics as M
from clsim.config import Plan, StrategyPlan, scenario_to_dict
from clsim.figures import confusion_image, matrix_image
from clsim.learner import Learner, deterministic_mode
from clsim.precision import resolve as resolve_precision
from clsim.results import METRICS, document, seed_dir, write_strategy_results
from clsim.sinks import TensorBoardSink

ProgressFn = Callable[[str, str, int, int, int], None]  # (run, phase, experience, done, total)


class Trainer(Protocol):
    """What :func:`run` drives."""

    def train_experience(self, i: int) -> None: ...

    def evaluate(self) -> list:
        """Confusion matrices (K x K arrays) of the model in service on every experience's test set."""

    def costs(self) -> dict:
        """Costs so far: ``train_seconds``, ``eval_seconds``, ``samples_trained``, ``trainable_params`` …"""

    def scalars(self, i: int) -> dict[str, float]:
        """TensorBoard scalars of experience ``i`` (e.g. ``train/loss``)."""

    def extra(self) -> dict:
        """Fields the metrics document adds (a federation's rounds, bytes, clients)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def hparams(plan: Plan, spec: StrategyPlan, device: str = "cpu") -> dict[str, Any]:
    """The hyper-parameters a strategy run is filed under (metrics.json, TensorBoard); ``precision``
    is the one that runs on ``device`` (``auto`` resolved)."""
    sc, tr = plan.scenario, spec.train  # the strategy's own training options (scenario + its overrides)
    return {"strategy": spec.name, **spec.hparams(), "finetune": sc.model.finetune, "lr": tr.lr,
            "epochs": tr.epochs, "batch_size": tr.batch_size, "weight_decay": tr.weight_decay, "warmup": tr.warmup,
            "schedule": tr.schedule, "lp_epochs": tr.lp_epochs, "lp_lr": tr.lp_lr,
            "precision": resolve_precision(tr.precision, device),
            "seed": sc.seed}


class Lifecycle:
    """The results of one strategy run as they grow: zero-shot row, R, resumes, TensorBoard, checkpoints."""

    def __init__(self, plan: Plan, spec: StrategyPlan, tokens, run_dir: str | Path,
                 resume: dict | None = None, progress: ProgressFn | None = None, device: str = "cpu"):
        """``plan``: the plan for this run's one seed (``Plan.for_seed``); ``device``: where it trains."""
        self.name, self.names, self.labels, self.progress = spec.name, list(tokens.names), list(tokens.label_names), \
            progress
        self.seed = plan.scenario.seed
        self.out = seed_dir(run_dir, spec.name, self.seed)
        self.hparams = hparams(plan, spec, device)
        self.fingerprint = checkpoint.fingerprint(scenario_to_dict(plan.scenario), spec.hparams(), tokens)
        saved = checkpoint.load(self.out, self.fingerprint) if resume else None
        self.finished: dict | None = json.loads(saved["document"]) if saved and saved.get("finished") else None
        self.saved: dict | None = None if self.finished else saved
        self.z: list | None = list(saved["zero_shot"]) if self.saved else None  # confusion matrices
        self.R: list[list] = [list(r) for r in saved["rows"]] if self.saved else []  # one row per experience
        self.resumes: list[dict] = list(saved["resumes"]) if self.saved else []
        self.resume = resume
        self.tb: TensorBoardSink | None = None

    def report(self, phase: str, i: int, done: int, total: int) -> None:
        if self.progress:
            self.progress(self.name, phase, i, done, total)

    def document(self, trainer: Trainer) -> dict:
        restarts = sum(r.get("reason") == "actor_restart" for r in self.resumes)
        return document(self.name, self.names, self.labels, self.z, self.R, trainer.costs(), self.hparams,
                        {**trainer.extra(), "resumes": self.resumes, "restarts": restarts})

    def save(self, trainer: Trainer) -> None:
        """Checkpoint the results so far and the trainer's whole state."""
        checkpoint.save(self.out, {"fingerprint": self.fingerprint, "strategy": self.name, "zero_shot": self.z,
                                   "rows": self.R, "resumes": self.resumes, "trainer": trainer.state_dict()})

    def _finish(self, doc: dict) -> None:
        checkpoint.save(self.out, {"fingerprint": self.fingerprint, "strategy": self.name, "finished": True,
                                   "document": json.dumps(doc, default=str)})


def _counts(C) -> list[list[int]]:
    """A confusion matrix as plain lists of ints (checkpoints load them with weights_only)."""
    return [[int(v) for v in row] for row in (C.tolist() if hasattr(C, "tolist") else C)]


def run(life: Lifecycle, make_trainer: Callable[[Lifecycle], Trainer]) -> dict:
    """Train and evaluate experience by experience, recording as it goes; the metrics document."""
    if life.finished:  # e.g. the actor died after its last checkpoint: nothing to redo
        write_strategy_results(life.out, life.finished)
        return life.finished
    # resuming: hide events an earlier attempt logged for experiences it did not checkpoint
    with TensorBoardSink(life.out, purge_step=len(life.R) if life.resume else None) as tb:
        life.tb = tb
        trainer = make_trainer(life)
        if life.saved:
            trainer.load_state_dict(life.saved["trainer"])
        if life.resume:
            life.resumes.append({**life.resume, "from_experience": len(life.R),
                                 **getattr(trainer, "resume_point", lambda: {})()})
        T = len(life.names)
        if life.z is None:
            life.report("eval", -1, 0, 1)
            life.z = [_counts(c) for c in trainer.evaluate()]
            tb.log_zero_shot([M.accuracy(c) for c in life.z], life.names)
        doc = life.document(trainer)
        if life.R:  # results may be one experience ahead of the checkpoint: bring them back in step
            write_strategy_results(life.out, doc)
        for i in range(len(life.R), T):
            trainer.train_experience(i)
            row = [_counts(c) for c in trainer.evaluate()]
            life.R.append(row)
            doc = life.document(trainer)
            tb.log_row(i, doc["accuracy_matrix"][i], life.names, {k: v[-1] for k, v in doc["running"].items()})
            for name, v in zip(life.names, doc["balanced_accuracy_matrix"][i]):
                tb.log_scalar(f"balanced_accuracy/{name}", v, i)
            for m, v in doc["bal_running"].items():
                tb.log_scalar(f"stream/bal_{m}", v[-1], i)
            tb.log_image("confusion", confusion_image(row, life.names, life.labels,
                                                      f"after {life.names[i]} (rows: true, columns: predicted)"), i)
            for tag, value in trainer.scalars(i).items():
                tb.log_scalar(tag, value, i)
            if i == T - 1:  # final entries before the last checkpoint: a finished checkpoint means all written
                tb.log_image("accuracy_matrix", matrix_image(doc["accuracy_matrix"], life.names), i)
                tb.log_image("balanced_accuracy_matrix", matrix_image(doc["balanced_accuracy_matrix"], life.names,
                                                                      "balanced accuracy matrix"), i)
                costs = doc["costs"]
                tb.log_hparams(life.hparams, {f"hparam/{k}": doc[k] for k in METRICS}
                               | {f"hparam/{k}": costs[k] for k in ("train_seconds", "bytes_total") if k in costs},
                               step=i)
            tb.flush()
            write_strategy_results(life.out, doc)
            if i < T - 1:
                life.save(trainer)
            else:
                life._finish(doc)
            life.report("done_exp", i, i + 1, T)
    return doc


def run_strategy(plan: Plan, spec: StrategyPlan, tokens, run_dir: str | Path, device: str = "cpu",
                 progress: ProgressFn | None = None, resume: dict | None = None) -> dict:
    """A central strategy run: a ``Learner`` through :func:`run`. ``resume``
    (``{"reason": "resume" | "actor_restart", ...}``) continues from the checkpoint in
    ``<run_dir>/<name>/`` when there is one, else starts over; either way metrics.json lists it
    under ``resumes``. A resumed run ends with the same metrics as an uninterrupted one."""
    deterministic_mode()
    life = Lifecycle(plan, spec, tokens, run_dir, resume, progress, device)

    def on_batch(i: int, done: int, total: int) -> None:
        life.report("train", i, done, total)

    return run(life, lambda _: Learner(plan.scenario, spec, tokens, device=device, on_batch=on_batch))
