"""Run a scenario: one Ray actor per strategy run, results to TensorBoard and results/.

The driver validates everything, builds and tokenises the stream once, puts it in Ray's
object store, and starts one actor per strategy. Each actor asks for a GPU (or the
scenario's fraction of one) when CUDA is visible, else CPUs, matches torch's threads to
its CPUs, trains experience by experience, and writes its own results as it goes, so a
crash loses at most the experience in flight.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from clsim import metrics as M
from clsim.config import Scenario, scenario_to_dict
from clsim.strategies import ResolvedStrategy, resolve

ProgressFn = Callable[[str, str, int, int, int], None]  # (run, phase, experience, done, total)


@dataclass
class Plan:
    """Everything a run needs, checked before any work starts."""

    scenario: Scenario
    file: Path
    specs: list[ResolvedStrategy]


def plan(scenario: Scenario, file: Path, only: list[str] | None = None) -> Plan:
    from clsim.config import ConfigError

    specs = [resolve(ref, file, k) for k, ref in enumerate(scenario.strategies)]
    if only:
        names = [s.name for s in specs]
        unknown = [o for o in only if o not in names]
        if unknown:
            raise ConfigError(None, "--strategies", f"{unknown[0]!r} is not in the scenario; expected some of {names}")
        specs = [s for s in specs if s.name in only]
    return Plan(scenario, file, specs)


def strategy_metrics(name: str, names: list[str], z: list[float], R: list[list[float]], costs: dict,
                     hparams: dict, extra: dict | None = None) -> dict:
    """The metrics.json document: every number is a function of R, z and the costs."""
    out = {"strategy": name, "experiences": names, "zero_shot": z, "accuracy_matrix": R,
           "complete": len(R) == len(names), "costs": costs, "hparams": hparams}
    if R:
        sub = [row[: len(R)] for row in R]
        out.update(M.summarize(sub, z[: len(R)]))
        out["running"] = M.running(sub, z[: len(R)])
    out.update(extra or {})
    return out


def run_strategy(scenario: Scenario, spec: ResolvedStrategy, tokens, out_dir: str, device: str = "cpu",
                 progress: ProgressFn | None = None) -> dict:
    """Train ``spec`` over the stream, writing TensorBoard events and metrics after every experience."""
    from clsim.learner import Learner
    from clsim.sinks import TensorBoardSink, write_strategy_results

    out = Path(out_dir) / spec.name
    names = tokens.names
    T = len(names)

    def on_batch(i, done, total):
        if progress:
            progress(spec.name, "train", i, done, total)

    learner = Learner(scenario, spec, tokens, device=device, on_batch=on_batch)
    hp = {**spec.hparams(), "finetune": scenario.model.finetune, "lr": scenario.train.lr,
          "epochs": scenario.train.epochs, "batch_size": scenario.train.batch_size, "seed": scenario.seed}
    R: list[list[float]] = []
    with TensorBoardSink(out) as tb:
        if progress:
            progress(spec.name, "eval", -1, 0, 1)
        z = learner.evaluate()
        tb.log_zero_shot(z, names)
        for i in range(T):
            learner.train_experience(i)
            row = learner.evaluate()
            R.append(row)
            p = learner.probe
            costs = {"train_seconds": float(sum(p.train_seconds)), "eval_seconds": float(sum(learner.eval_seconds)),
                     "samples_trained": int(sum(p.samples)), "trainable_params": learner.trainable_params,
                     "per_experience": {"train_seconds": p.train_seconds, "samples": p.samples,
                                        "loss": p.loss, "reg_ratio": p.reg_ratio}}
            doc = strategy_metrics(spec.name, names, z, R, costs, hp)
            tb.log_row(i, row, names, {k: v[-1] for k, v in doc["running"].items()})
            tb.log_scalar("train/loss", p.loss[-1], i)
            tb.log_scalar("train/reg_ratio", p.reg_ratio[-1], i)
            tb.log_scalar("cost/train_seconds", p.train_seconds[-1], i)
            tb.log_scalar("cost/samples", p.samples[-1], i)
            write_strategy_results(out, doc)
            if progress:
                progress(spec.name, "done_exp", i, i + 1, T)
        tb.log_matrix(np.asarray(R), names, T - 1)
        tb.log_hparams(hp, {f"hparam/{k}": doc[k] for k in M.NAMES} | {"hparam/train_seconds": costs["train_seconds"]})
    return doc


# ----------------------------------------------------------------------------- Ray
def _actor_class():
    import ray

    @ray.remote(max_concurrency=2)  # one thread trains, the other answers progress polls
    class StrategyActor:
        """One strategy run; torch threads match the CPUs Ray gave this actor."""

        def __init__(self, threads: int):
            import torch

            torch.set_num_threads(max(1, threads))
            self.events: list[tuple] = []

        def run(self, scenario, spec, tokens, out_dir, device):
            return run_strategy(scenario, spec, tokens, out_dir, device, lambda *e: self.events.append(e))

        def progress(self) -> list[tuple]:
            """Events since the last poll, coalesced to the latest per phase."""
            events, self.events = self.events, []
            latest: dict = {}
            for e in events:
                latest[(e[1], e[2]) if e[1] == "done_exp" else e[1]] = e
            return list(latest.values())

    return StrategyActor


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from clsim.config import ConfigError

        raise ConfigError(None, "--device", "cuda requested but no CUDA device is visible")
    return device


def new_run_dir(output: Path, scenario: Scenario, run_id: str | None = None) -> Path:
    run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(output) / scenario.name / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def execute(p: Plan, tokens, run_dir: Path, device: str = "auto", ray_address: str | None = None,
            progress: ProgressFn | None = None) -> list[dict]:
    """Run every planned strategy as a Ray actor; return their metrics documents in plan order."""
    import ray
    import yaml

    from clsim.sinks import atomic_write_text, write_summary

    device = resolve_device(device)
    atomic_write_text(run_dir / "scenario.yaml", yaml.safe_dump(scenario_to_dict(p.scenario), sort_keys=False))
    started_here = not ray.is_initialized()
    if started_here:
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=False)
    try:
        res = p.scenario.resources
        use_gpu = device == "cuda"
        opts = {"num_cpus": res.cpus_per_run, "num_gpus": res.gpus_per_run if use_gpu else 0}
        tokens_ref = ray.put(tokens)
        Actor = _actor_class()
        refs = {}
        for spec in p.specs:
            a = Actor.options(**opts).remote(res.cpus_per_run)
            refs[a.run.remote(p.scenario, spec, tokens_ref, str(run_dir), device)] = (spec.name, a)
        results: dict[str, dict] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, timeout=0.5)
            for ref in done:
                name, actor = refs[ref]
                results[name] = ray.get(ref)
                ray.kill(actor)  # an actor holds its CPUs/GPU until it dies; free them for the next run
                if progress:
                    progress(name, "finished", -1, 1, 1)
            if progress and pending:  # actors still waiting for resources do not answer yet: never block
                polls = [refs[ref][1].progress.remote() for ref in pending]
                ready, _ = ray.wait(polls, num_returns=len(polls), timeout=0.2)
                for poll in ready:
                    for event in ray.get(poll):
                        progress(*event)
        docs = [results[s.name] for s in p.specs]
        write_summary(run_dir, [summary_row(d) for d in docs])
        return docs
    finally:
        if started_here:
            ray.shutdown()


def summary_row(doc: dict) -> dict:
    c = doc["costs"]
    return {"strategy": doc["strategy"], **{k: doc.get(k, float("nan")) for k in M.NAMES},
            "train_s": c["train_seconds"], "eval_s": c["eval_seconds"], "samples": c["samples_trained"],
            "trainable_params": c["trainable_params"]}


def elapsed(t0: float) -> str:
    s = time.perf_counter() - t0
    return f"{s / 60:.1f} min" if s > 90 else f"{s:.1f} s"
