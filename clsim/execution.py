"""A whole plan's run: central strategies as Ray actors, then federated ones as Flower
simulations, and the run folder's summary kept current throughout.

The summary is written before any training and rewritten whenever a strategy ends, naming every
unfinished strategy, so a run stopped at any moment never looks finished. Federated strategies
run after the actors because Flower shuts Ray down when a simulation ends; Ray is started again
for the next one.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import ray
from transformers.utils import logging as hf_logging

from clsim.config import Plan
from clsim.federated.fleet import FederationError
from clsim.federated.job import federated_job
from clsim.federated.launch import run_simulation_job
from clsim.federated.schema import FEDERATED
from clsim.learner import resolve_device
from clsim.lifecycle import ProgressFn
from clsim.results import finished_docs, partial_doc, write_hparams_experiment, write_plan, write_summary
from clsim.runner import execute as run_actors
from clsim.runner import one_line, start_ray

LOG_FILE = "run.log"
# libraries whose notices are not for a clsim user's console: transformers' weight-loading
# reports, Ray's start-up notices, Python warnings raised inside libraries
ROUTED = ("transformers", "ray", "py.warnings")


@contextlib.contextmanager
def run_log(run_dir: Path):
    """Within the block, what libraries log goes to ``<run>/run.log`` instead of the console
    (clsim's own progress and summary stay there); transformers' loading bars are off."""
    handler = logging.FileHandler(Path(run_dir) / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in map(logging.getLogger, ROUTED)]
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    logging.captureWarnings(True)
    for lg, _, _ in saved:
        lg.handlers, lg.propagate = [handler], False
    try:
        yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
        logging.captureWarnings(False)
        if bars:
            hf_logging.enable_progress_bar()
        handler.close()


def execute(plan: Plan, tokens, run_dir: Path, device: str = "auto", ray_address: str | None = None,
            progress: ProgressFn | None = None, resume: bool = False, max_restarts: int = 2) -> list[dict]:
    """Run every strategy of ``plan``; their metrics documents in plan order. ``resume``
    continues a run folder: finished strategies are kept, the rest resume from their checkpoints."""
    device = resolve_device(device)
    if not resume:
        write_plan(plan, run_dir)
    names = [s.name for s in plan.strategies]
    results: dict[str, dict] = finished_docs(run_dir, names) if resume else {}
    errors: dict[str, str] = {}

    def summary(*_) -> list[dict]:
        docs = [results.get(n) or partial_doc(run_dir, n, errors.get(n)) for n in names]
        write_summary(run_dir, docs)
        return docs

    todo = [s for s in plan.strategies if s.name not in results]
    central = [s for s in todo if FEDERATED.key not in s.extensions]
    summary()
    started_here = bool(todo) and not ray.is_initialized()
    try:
        if central:
            start_ray(ray_address)
            done, failed = run_actors(plan, central, tokens, run_dir, device, progress, resume, max_restarts,
                                      on_finish=lambda name: summary())
            results.update(done)
            errors.update(failed)
        for spec in [s for s in todo if FEDERATED.key in s.extensions]:
            if started_here:  # Flower shut down the previous simulation's Ray
                start_ray(ray_address)
            try:
                results[spec.name] = run_simulation_job(federated_job(plan, spec.name), run_dir, tokens, device,
                                                        progress, ray_address=ray_address, resume=resume)
            except (FederationError, RuntimeError) as exc:  # a failed federation is reported; the others are kept
                errors[spec.name] = one_line(exc.__cause__ or exc)
            if progress:
                progress(spec.name, "finished" if spec.name in results else "failed", -1, 1, 1)
            summary()
    finally:
        docs = summary()
        if started_here and ray.is_initialized():
            ray.shutdown()
    if all(d.get("complete") for d in docs):
        write_hparams_experiment(run_dir)  # one hparams table listing every strategy
    return docs
