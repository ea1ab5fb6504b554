"""The Flower ServerApp: a ``flwr.serverapp.strategy`` class, unchanged, over the whole stream.

The federation spends ``rounds_per_experience`` rounds on each experience, so one call to
``Strategy.start`` runs ``T * rounds_per_experience`` rounds; clients derive their experience
from the server round. The strategy's ``evaluate_fn`` evaluates the global model on every
experience's test set before round 1 (zero-shot row) and after the last round of each
experience (row k of R), which the Recorder writes like any central strategy's results.

``app`` is what ``flwr run .`` starts (``[tool.flwr.app.components]`` in pyproject.toml); its
run config names the scenario file, the strategy and the output folder. ``clsim run`` builds
the same server loop through :func:`server_app_for` and ``run_simulation``.
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from clsim.federated.job import Job

log = logging.getLogger("flwr")
ProgressFn = Callable[[str, str, int, int, int], None]
APP_ROOT = Path(__file__).resolve().parents[2]  # the project (or installed Flower App) folder


def serve(grid: Grid, job: Job, run_dir: str | Path, tokens=None, device: str = "cpu",
          progress: ProgressFn | None = None, resume: bool = False) -> dict:
    """Run the federated strategy of ``job`` on ``grid``; return its metrics document.

    After every round but the last the server checkpoints (clsim.federated.resume); ``resume``
    continues from that checkpoint when there is one, else starts over."""
    import json

    from clsim import checkpoint
    from clsim.config import scenario_to_dict
    from clsim.data import build_stream
    from clsim.data.stream import derive_seed
    from clsim.evaluation import evaluate_row
    from clsim.federated.arrays import load_record, to_record
    from clsim.federated.fleet import Fleet
    from clsim.federated.recorder import Recorder
    from clsim.federated import resume as resumable
    from clsim.federated.spec import build_server_strategy
    from clsim.models import build_model, tokenize_stream, trainable_parameters
    from clsim.sinks import write_strategy_results

    sc, fed = job.scenario, job.fed
    if tokens is None:
        tokens = tokenize_stream(build_stream(sc.stream, sc.seed), sc.model)
    T, rpe = len(tokens.names), fed.rounds_per_experience
    out = Path(run_dir) / job.name
    fingerprint = checkpoint.fingerprint(scenario_to_dict(sc), job.spec.hparams(), tokens)
    saved = checkpoint.load(out, fingerprint) if resume else None
    if saved and saved.get("finished"):  # nothing left to do
        doc = json.loads(saved["document"])
        write_strategy_results(out, doc)
        return doc
    if job.state_dir and not saved:  # starting over: no client may pick up an earlier attempt's state
        for f in Path(job.state_dir).glob("client_*.pt"):
            f.unlink()
    done = saved["round"] if saved else 0  # rounds finished before this attempt
    model = build_model(sc.model, len(tokens.label_names), sc.seed).to(device)
    rec = Recorder(job, tokens.names, run_dir, trainable_parameters(model), saved["recorder"] if saved else None)
    if resume:
        rec.resumes.append({"reason": "resume", "from_experience": len(rec.R), "from_round": done + 1})
    fleet = Fleet(grid, fed.clients, fed.node_timeout, round_offset=done, reply_timeout=fed.round_timeout)
    strategy = build_server_strategy(fed)

    def report(phase: str, i: int, done: int, total: int) -> None:
        if progress:
            progress(job.name, phase, i, done, total)

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
        if rnd == 0 and saved:  # the zero-shot row is in the checkpoint
            return None
        rnd += done
        if rnd > 0:
            rec.round_done(rnd, (rnd - 1) // rpe, fleet.rounds.get(rnd))
            report("train", (rnd - 1) // rpe, (rnd - 1) % rpe + 1, rpe)
        result = None
        if rnd % rpe == 0:  # the last round of an experience (or before the first): evaluate
            load_record(model, arrays)
            t0 = time.perf_counter()
            row = evaluate_row(model, tokens.test, sc.train.eval_batch_size, device, tokens.pad_id,
                               sc.train.precision)
            seconds = time.perf_counter() - t0
            if rnd == 0:
                rec.zero_shot(row, seconds)
            else:
                rec.experience_done(rnd // rpe - 1, row, seconds, fleet.rounds.get(rnd))
            result = MetricRecord({"accuracy": [float(v) for v in row]})
        if 0 < rnd < T * rpe:  # after the last round the finished document is saved instead
            rec.tb.flush()
            resumable.save_round(out, fingerprint, job.name, rnd, arrays, rec, strategy)
        if rnd > 0 and result is not None:
            k = rnd // rpe - 1
            report("done_exp", k, k + 1, T)
        return result

    try:
        report("eval", -1, 0, 1)
        fleet.discover(job.to_record())
        if saved:  # Flower's node sampling draws from `random`: seeded, or where the checkpoint left it
            initial = resumable.restore(saved, strategy)
        else:
            initial = to_record(model)
            random.seed(derive_seed(sc.seed, 0xF1))
        strategy.start(grid=fleet, initial_arrays=initial, num_rounds=T * rpe - done, timeout=fed.round_timeout,
                       train_config=ConfigRecord(), evaluate_config=ConfigRecord(), evaluate_fn=evaluate_fn)
        doc = rec.finish(fleet)
        checkpoint.save(out, {"fingerprint": fingerprint, "strategy": job.name, "finished": True,
                              "document": json.dumps(doc, default=str)})
        return doc
    finally:
        rec.close()


def server_app_for(job: Job, run_dir: str | Path, tokens=None, device: str = "cpu",
                   progress: ProgressFn | None = None, result: dict | None = None, resume: bool = False) -> ServerApp:
    """A ServerApp running ``job`` (for ``run_simulation``); its document lands in ``result["doc"]``."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        doc = serve(grid, job, run_dir, tokens, device, progress, resume)
        if result is not None:
            result["doc"] = doc

    return server


DEPLOYMENT_DIR = "flower"  # what `clsim flower launch` keeps in the run folder (certs, keys, logs)


def record_stop(run_dir: str | Path, name: str, reason: str) -> None:
    """A strategy stopped before its end: summary.csv/.md show its numbers so far, marked incomplete
    (its metrics.json stays as written after its last finished experience)."""
    from clsim.runner import partial_doc, summary_row
    from clsim.sinks import write_summary

    doc = partial_doc(Path(run_dir), name, reason)
    write_summary(run_dir, [summary_row(doc)], incomplete=[name] if not doc.get("complete") else [])


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run``: the run config names ``scenario`` (file), ``strategy``, ``output`` and ``run-id``.

    The run folder must be new, or hold only the ``flower/`` folder of ``clsim flower launch``.
    If the run stops early the summary marks the strategy incomplete and the log says why
    (``clsim: stopped: ...``) before the error goes back to Flower."""
    import torch
    import yaml

    from clsim.config import scenario_to_dict
    from clsim.federated.job import load_job
    from clsim.runner import new_run_dir, summary_row
    from clsim.sinks import atomic_write_text, write_summary

    cfg = context.run_config
    job = load_job(str(cfg["scenario"]), str(cfg.get("strategy", "")) or None, search=(APP_ROOT,))
    output, run_id = Path(str(cfg.get("output", "results"))), str(cfg.get("run-id", "")) or None
    run_dir = output / job.scenario.name / str(run_id)
    if not (run_id and run_dir.is_dir() and {p.name for p in run_dir.iterdir()} == {DEPLOYMENT_DIR}):
        run_dir = new_run_dir(output, job.scenario, run_id)  # else: made by `clsim flower launch`
    atomic_write_text(run_dir / "scenario.yaml", yaml.safe_dump(scenario_to_dict(job.scenario), sort_keys=False))
    log.info("clsim: %s / %s -> %s", job.scenario.name, job.name, run_dir)
    try:
        doc = serve(grid, job, run_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        record_stop(run_dir, job.name, reason)
        log.error("clsim: stopped: %s (results so far in %s)", reason, run_dir)
        raise
    write_summary(run_dir, [summary_row(doc)])
    log.info("clsim: acc %.3f, forgetting %s, %d rounds, %d failed replies; results in %s",
             doc.get("acc", float("nan")), doc.get("forgetting"), doc["rounds"], doc["failures"], run_dir)
