"""The Flower ServerApps: ``app`` for ``flwr run`` on real SuperLink/SuperNodes, and
:func:`server_app_for` for the simulation inside ``clsim run``. Both run
``clsim.federated.server.serve``.

``app`` is what ``flwr run .`` starts (``[tool.flwr.app.components]`` in pyproject.toml); its run
config names the scenario file, the strategy, the output folder and the run id — or a run
folder's ``plan`` and, to continue an interrupted run from its last round checkpoint, ``resume``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from clsim.config import ConfigError
from clsim.data import build_stream, split_record
from clsim.federated.job import Job, federated_job, load_job
from clsim.federated.processes import APP_ROOT
from clsim.federated.schema import FEDERATED
from clsim.federated.server import serve
from clsim.lifecycle import ProgressFn
from clsim.models import tokenize_stream
from clsim.results import (
    PLAN_FILE,
    SPLITS_FILE,
    new_run_dir,
    partial_doc,
    read_plan,
    write_plan,
    write_splits,
    write_strategy_results,
)
from clsim.tables import write_summary

log = logging.getLogger("flwr")


def server_app_for(job: Job, run_dir: str | Path, tokens, device: str = "cpu", progress: ProgressFn | None = None,
                   result: dict | None = None, resume: bool = False) -> ServerApp:
    """A ServerApp running ``job`` (for ``run_simulation``); its document lands in ``result["doc"]``."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        doc = serve(grid, job, run_dir, tokens, device, progress, resume)
        if result is not None:
            result["doc"] = doc

    return server


app = ServerApp()


def _flag(value) -> bool | None:
    """A run-config boolean (``true``, ``"true"``, ``1``), ``None`` when it is not one."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}.get(text)


def job_from_run_config(cfg) -> tuple[Job, Path, bool]:
    """The job, its run folder and whether to resume, from ``flwr run``'s run config:

    - ``plan='<run>/plan.json'`` (what ``clsim flower launch`` writes) runs that plan in its folder;
      with ``resume=true`` it continues from the folder's last round checkpoint;
    - ``resume='<run dir>'`` is the same as ``plan='<run dir>/plan.json' resume=true``;
    - else ``scenario`` (with ``output`` and ``run-id``) starts a new run folder.

    Clients keep their state in ``<run>/<strategy>/seed_<k>/clients/`` unless a SuperNode names its own
    ``state-dir``."""
    strategy = str(cfg.get("strategy", "")) or None
    resume, plan = cfg.get("resume", False), str(cfg.get("plan", ""))
    if _flag(resume) is None:  # a run folder
        plan, resume = str(Path(str(resume)) / PLAN_FILE), True
    resume = bool(_flag(resume))
    if plan:
        run_dir = Path(plan).parent
        job = federated_job(read_plan(run_dir, (FEDERATED,)), strategy)
    elif resume:
        raise ConfigError(None, "resume", "needs the run folder: resume='<run dir>' (or plan='<run>/plan.json' "
                                          "resume=true)")
    else:
        job = load_job(str(cfg["scenario"]), strategy, search=(APP_ROOT,))
        run_dir = new_run_dir(Path(str(cfg.get("output", "results"))), job.scenario.name,
                              str(cfg.get("run-id", "")) or None)
        write_plan(job.plan.only([job.name]), run_dir)
    return job.in_run(run_dir), run_dir, resume


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run``: the run config names a run folder's ``plan`` (what ``clsim flower launch``
    writes; ``resume`` continues it), or a ``scenario`` file with ``output`` and ``run-id`` for a new
    run folder; and the ``strategy`` (see :func:`job_from_run_config`). If the run stops early the
    summary marks the strategy incomplete and the log says why (``clsim: stopped: ...``) before the
    error goes back to Flower."""
    job, run_dir, resume = job_from_run_config(context.run_config)
    sc = job.scenario
    log.info("clsim: %s / %s -> %s%s", sc.name, job.name, run_dir, " (resuming)" if resume else "")
    stream = build_stream(sc.stream, sc.seed, job.plan.file)
    if not (run_dir / SPLITS_FILE).is_file():
        write_splits(run_dir, {sc.seed: split_record(stream)})
    tokens = tokenize_stream(stream, sc.model)
    try:
        doc = serve(grid, job, run_dir, tokens, device="cuda" if torch.cuda.is_available() else "cpu",
                    resume=resume)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        write_summary(run_dir, [partial_doc(run_dir, job.name, [sc.seed], reason)])  # marked incomplete
        log.error("clsim: stopped: %s (results so far in %s)", reason, run_dir)
        raise
    over_seeds = partial_doc(run_dir, job.name, [sc.seed])
    write_strategy_results(run_dir / job.name, over_seeds)
    write_summary(run_dir, [over_seeds])
    log.info("clsim: acc %.3f, forgetting %s, %d rounds, %d failed replies; results in %s",
             doc.get("acc", float("nan")), doc.get("forgetting"), doc["rounds"], doc["failures"], run_dir)
