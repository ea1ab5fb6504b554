"""A whole plan's run: every (strategy, seed) — central ones as Ray actors, then federated ones as
Flower simulations — and the run folder's documents over seeds and summary kept current.

The summary is written before any training and rewritten whenever a strategy ends, naming every
unfinished strategy, so a run stopped at any moment never looks finished. Federated strategies
run after the actors because Flower shuts Ray down when a simulation ends; Ray is started again
for the next one.
"""
from __future__ import annotations

import contextlib
import logging
import os
import site
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
from clsim.results import finished_seeds, partial_doc, write_hparams_experiment, write_plan, write_strategy_results
from clsim.runner import Run, one_line, start_ray
from clsim.runner import execute as run_actors
from clsim.tables import write_summary

LOG_FILE = "run.log"
# libraries whose notices are not for a clsim user's console: transformers' weight-loading
# reports, Ray's start-up notices, Python warnings raised inside libraries
ROUTED = ("transformers", "ray", "py.warnings")


class PortableFormatter(logging.Formatter):
    """Log lines that name no machine's folders: the installed packages' folder is written
    ``<site-packages>`` and the working folder ``.`` (libraries log where they loaded weights from)."""

    def __init__(self, fmt: str):
        super().__init__(fmt)
        self.prefixes = sorted({(p, "<site-packages>") for p in site.getsitepackages() + [site.getusersitepackages()]}
                               | {(os.getcwd(), ".")}, key=lambda pr: -len(pr[0]))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for prefix, name in self.prefixes:
            line = line.replace(prefix, name)
        return line


@contextlib.contextmanager
def run_log(run_dir: Path):
    """Within the block, what libraries log goes to ``<run>/run.log`` instead of the console
    (clsim's own progress and summary stay there); transformers' loading bars are off."""
    handler = logging.FileHandler(Path(run_dir) / LOG_FILE, encoding="utf-8")
    handler.setFormatter(PortableFormatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
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


def label(plan: Plan, name: str, seed: int) -> str:
    """How a (strategy, seed) run is named in progress and Ray: the strategy when there is one seed."""
    return name if len(plan.seeds) == 1 else f"{name}/seed_{seed}"


def execute(plan: Plan, tokens: dict[int, object], run_dir: Path, device: str = "auto",
            ray_address: str | None = None, progress: ProgressFn | None = None, resume: bool = False,
            max_restarts: int = 2) -> list[dict]:
    """Run every strategy of ``plan`` once per seed (``tokens``: each seed's tokenised stream);
    their documents over seeds, in plan order. ``resume`` continues a run folder: finished
    (strategy, seed) runs are kept, the rest resume from their checkpoints."""
    device = resolve_device(device)
    if not resume:
        write_plan(plan, run_dir)
    names, seeds = [s.name for s in plan.strategies], plan.seeds
    done: dict[str, dict[int, dict]] = {n: finished_seeds(run_dir, n, seeds) if resume else {} for n in names}
    errors: dict[str, str] = {}

    def summary() -> list[dict]:
        docs = [partial_doc(run_dir, n, seeds, errors.get(n)) for n in names]
        write_summary(run_dir, docs)
        return docs

    def finished(name: str) -> None:
        """A strategy's document over its seeds, rewritten whenever one of its runs ends."""
        doc = partial_doc(run_dir, name, seeds)
        if doc.get("experiences"):
            write_strategy_results(run_dir / name, doc)
        summary()

    todo = [(spec, seed) for spec in plan.strategies for seed in seeds if seed not in done[spec.name]]
    central = [Run(label(plan, spec.name, seed), plan.for_seed(seed), spec, seed) for spec, seed in todo
               if FEDERATED.key not in spec.extensions]
    by_label = {r.label: r.spec.name for r in central}
    summary()
    started_here = bool(todo) and not ray.is_initialized()
    try:
        if central:
            start_ray(ray_address)
            _, failed = run_actors(central, tokens, run_dir, device, progress, resume, max_restarts,
                                   on_finish=lambda lab: finished(by_label[lab]))
            errors.update({by_label[lab]: why for lab, why in failed.items()})
        for spec, seed in [(s, k) for s, k in todo if FEDERATED.key in s.extensions]:
            if started_here:  # Flower shut down the previous simulation's Ray
                start_ray(ray_address)
            name = label(plan, spec.name, seed)
            report = (lambda _, *e, name=name: progress(name, *e)) if progress else None
            try:
                run_simulation_job(federated_job(plan.for_seed(seed), spec.name), run_dir, tokens[seed], device,
                                   report, ray_address=ray_address, resume=resume)
            except (FederationError, RuntimeError) as exc:  # a failed federation is reported; the others are kept
                errors[spec.name] = one_line(exc.__cause__ or exc)
            if progress:
                progress(name, "failed" if spec.name in errors else "finished", -1, 1, 1)
            finished(spec.name)
    finally:
        docs = summary()
        if started_here and ray.is_initialized():
            ray.shutdown()
    if all(d.get("complete") for d in docs):
        write_hparams_experiment(run_dir)  # one hparams table listing every (strategy, seed)
    return docs
