"""The Flower ServerApps: ``app`` for ``flwr run`` on real SuperLink/SuperNodes, and
:func:`server_app_for` for the simulation inside ``clsim run``. Both run
``clsim.federated.server.serve``.

``app`` is what ``flwr run .`` starts (``[tool.flwr.app.components]`` in pyproject.toml); its run
config names the scenario file, the strategy, the output folder and the run id.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from clsim.data import build_stream
from clsim.federated.job import Job, load_job
from clsim.federated.server import serve
from clsim.lifecycle import ProgressFn
from clsim.models import tokenize_stream
from clsim.results import new_run_dir, write_plan, write_summary

log = logging.getLogger("flwr")
APP_ROOT = Path(__file__).resolve().parents[2]  # the project (or installed Flower App) folder


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


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run``: the run config names ``scenario`` (file), ``strategy``, ``output`` and ``run-id``."""
    cfg = context.run_config
    job = load_job(str(cfg["scenario"]), str(cfg.get("strategy", "")) or None, search=(APP_ROOT,))
    sc = job.scenario
    run_dir = new_run_dir(Path(str(cfg.get("output", "results"))), sc.name, str(cfg.get("run-id", "")) or None)
    write_plan(job.plan.only([job.name]), run_dir)
    log.info("clsim: %s / %s -> %s", sc.name, job.name, run_dir)
    tokens = tokenize_stream(build_stream(sc.stream, sc.seed, job.plan.file), sc.model)
    doc = serve(grid, job, run_dir, tokens, device="cuda" if torch.cuda.is_available() else "cpu")
    write_summary(run_dir, [doc])
    log.info("clsim: acc %.3f, forgetting %s, %d rounds, %d failed replies; results in %s",
             doc.get("acc", float("nan")), doc.get("forgetting"), doc["rounds"], doc["failures"], run_dir)
