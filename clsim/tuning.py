"""``clsim tune``: a strategy's hyper-parameters searched with Ray Tune, scored on validation
splits only.

A trial is an ordinary strategy run (``clsim.lifecycle.run_strategy``) on a stream whose test
splits have been replaced by the validation splits: the test splits are not in what a trial
receives, so no choice made here can have looked at them. The score is a metric of that run's
final row (default ``bal_acc``: the mean balanced accuracy over every experience's validation set
after the whole stream — plasticity and stability at once). The search space comes from the
scenario's ``tune.space`` or the command line; Ray Tune samples it (random search, seeded),
runs trials side by side as resources allow, and keeps its experiment resumable
(``Tuner.restore``). The best configuration and the trial table are written next to it.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ray import tune

from clsim.config import ConfigError, Plan, StrategyPlan, StrategyRef
from clsim.config.presets import resolve_strategy
from clsim.config.scenario import Dimension, TuneConfig
from clsim.lifecycle import run_strategy
from clsim.models import TokenizedStream
from clsim.sinks import atomic_write_text, write_csv, write_json
from clsim.tables import markdown

EXPERIMENT = "ray"  # Ray Tune's experiment folder inside a tune folder (what a resume restores)


def validation_stream(tokens: TokenizedStream, file: Path | None = None) -> TokenizedStream:
    """What a trial trains and is scored on: the training splits, and the validation splits in
    place of the test splits (which are not part of it)."""
    if not tokens.val:
        raise ConfigError(file, "stream.val_per_experience", "tuning scores trials on validation splits; "
                                                             "set val_per_experience > 0")
    return replace(tokens, test=list(tokens.val), val=[])


def search_space(space: dict[str, Dimension]) -> dict[str, Any]:
    """The scenario's dimensions as Ray Tune's sampling domains."""
    out = {}
    for name, d in space.items():
        if d.loguniform:
            out[name] = tune.loguniform(*d.loguniform)
        elif d.uniform:
            out[name] = tune.uniform(*d.uniform)
        elif d.randint:
            out[name] = tune.randint(*d.randint)
        elif d.grid:
            out[name] = tune.grid_search(list(d.grid))
        else:
            out[name] = tune.choice(list(d.choice))
    return out


def trial_strategy(plan: Plan, name: str, config: dict, extensions: tuple = ()) -> StrategyPlan:
    """The strategy ``name`` of ``plan`` with a trial's values, checked by the one resolver. A
    ``train.<field>`` key searches the strategy's training recipe (e.g. ``train.epochs``)."""
    index = next(k for k, ref in enumerate(plan.scenario.strategies) if ref.run_name == name)
    ref = plan.scenario.strategies[index]
    params = {k: v for k, v in config.items() if not k.startswith("train.")}
    train = {**(ref.train or {}), **{k[len("train."):]: v for k, v in config.items() if k.startswith("train.")}}
    trial_ref = StrategyRef.model_validate({"preset": ref.preset, "name": ref.run_name, **ref.overrides,
                                           **params, **({"train": train} if train else {})})
    return resolve_strategy(trial_ref, file=plan.file, index=index, experiences=plan.experiences,
                            extensions=extensions, train=plan.scenario.train)


def check(plan: Plan, name: str, space: dict[str, Dimension], extensions: tuple = ()) -> None:
    """Every searched parameter exists for the strategy and takes the dimension's values (one
    example each): a bad search space fails before any trial runs."""
    if name not in [s.name for s in plan.strategies]:
        raise ConfigError(None, "--strategy", f"{name!r} is not a strategy of the scenario; expected one of "
                                              f"{[s.name for s in plan.strategies]}")
    if not space:
        raise ConfigError(plan.file, f"tune.space.{name}", "nothing to search; give parameters in the scenario's "
                                                           "tune.space or with --space")
    trial = trial_strategy(plan, name, {k: d.example() for k, d in space.items()}, extensions)
    if trial.train.patience or "train.patience" in space:
        raise ConfigError(plan.file, "train.patience", "a trial is scored on the validation splits; early stopping "
                                                       "would choose its epochs on the same data: set patience: 0 "
                                                       "(and tune train.epochs instead)")


def _trial(config: dict, *, plan: Plan, name: str, tokens: TokenizedStream, metric: str, extensions: tuple,
           device: str) -> None:
    """One Ray Tune trial: the strategy with ``config`` on the validation stream; reports every metric."""
    import torch  # the trial's process

    torch.set_num_threads(max(1, plan.scenario.resources.cpus_per_run))
    out = Path(tune.get_context().get_trial_dir())
    doc = run_strategy(plan, trial_strategy(plan, name, config, extensions), tokens, out, device)
    evaluated = [int(sum(map(sum, c))) for c in doc["confusion"]["rows"][-1]]  # texts scored per experience
    tune.report({metric: doc[metric], **{k: doc[k] for k in SHOWN},
                 "train_seconds": doc["costs"]["train_seconds"], "evaluated_per_experience": evaluated})


TUNE_FILE = "tune.json"  # the strategy and search a tune folder was started with (what a resume continues)


def parse_space(items: list[str]) -> dict[str, Dimension]:
    """``--space`` entries: ``name=loguniform:LOW:HIGH``, ``uniform:LOW:HIGH``, ``randint:LOW:HIGH``,
    ``choice:A,B,C`` or ``grid:A,B,C`` (numbers where they parse)."""
    out = {}
    for item in items:
        name, _, spec = item.partition("=")
        kind, _, args = spec.partition(":")
        try:
            if kind in ("choice", "grid"):
                values = [_number(v) for v in args.split(",") if v]
                out[name.strip()] = Dimension.model_validate({kind: values})
            else:
                low, high = args.split(":")
                out[name.strip()] = Dimension.model_validate({kind: [_number(low), _number(high)]})
        except Exception:  # any malformed entry is the user's to fix: say what is expected
            raise ConfigError(None, "--space", f"{item!r}: expected NAME=loguniform:LOW:HIGH, uniform:LOW:HIGH, "
                                               "randint:LOW:HIGH, choice:A,B,... or grid:A,B,...") from None
    return out


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run(plan: Plan, name: str, tokens: TokenizedStream, out: Path, cfg: TuneConfig, device: str = "cpu",
        extensions: tuple = (), resume: bool = False, say: Callable[[str], None] = lambda s: None) -> dict:
    """Search ``cfg.space[name]`` for strategy ``name`` (Ray must be started); the best
    configuration, with the trial table written to ``out`` (``best.json``, ``trials.csv``, ``tune.md``)."""
    space = cfg.space.get(name, {})
    check(plan, name, space, extensions)
    if not resume:
        write_json(Path(out) / TUNE_FILE, {"strategy": name, "tune": cfg.model_dump(mode="json")})
    val = validation_stream(tokens, plan.file)
    res = plan.scenario.resources
    trainable = tune.with_resources(
        tune.with_parameters(_trial, plan=plan, name=name, tokens=val, metric=cfg.metric, extensions=extensions,
                             device=device),
        {"cpu": res.cpus_per_run, "gpu": res.gpus_per_run if device == "cuda" else 0})
    experiment = Path(out).resolve() / EXPERIMENT
    if resume and experiment.is_dir():
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=search_space(space),
                           tune_config=tune.TuneConfig(metric=cfg.metric, mode="max", num_samples=cfg.samples,
                                                       search_alg=tune.search.BasicVariantGenerator(
                                                           random_state=cfg.search_seed)),
                           run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(Path(out).resolve()),
                                                     verbose=0))
    grid = math.prod(len(d.grid) for d in space.values() if d.grid)
    say(f"{cfg.samples * grid} trials of {name} over {', '.join(space)}, scored by {cfg.metric} on validation splits")
    # clsim writes its own report: no TensorBoardX/CSV/JSON trial loggers, no console tables from Tune
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # without those loggers Tune's result grid warns that each trial has no result.json/progress.csv
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    results = tuner.fit()
    return write_report(results, name, space, cfg.metric, Path(out))


SHOWN = ("acc", "bal_acc", "forgetting", "learning_acc", "bal_learning_acc")  # validation scores every trial reports


def write_report(grid, name: str, space: dict, metric: str, out: Path) -> dict:
    """``trials.csv`` (every trial: parameters, scores, cost), ``tune.md`` and ``best.json``."""
    params = list(space)
    rows = []
    for r in grid:
        m = r.metrics or {}
        rows.append([*(r.config.get(p) for p in params), m.get(metric),
                     *(m.get(k) for k in SHOWN if k != metric), m.get("train_seconds"), "error" if r.error else "ok"])
    header = [*params, f"{metric} (validation)", *(k for k in SHOWN if k != metric), "train_s", "status"]
    rows.sort(key=lambda r: -(r[len(params)] if isinstance(r[len(params)], (int, float)) else float("-inf")))
    write_csv(out / "trials.csv", header, rows)
    ok = [r for r in rows if r[-1] == "ok" and r[len(params)] is not None]
    if not ok:
        raise RuntimeError(f"no trial of {name} finished; see {out / EXPERIMENT}")
    best = {"strategy": name, "metric": metric, "split": "validation", "score": ok[0][len(params)],
            "config": dict(zip(params, ok[0][:len(params)])), "trials": len(rows), "finished": len(ok)}
    write_json(out / "best.json", best)

    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = [f"# Tuning {name}", "", f"Objective: `{metric}` on the validation splits (test splits never seen); "
             f"{len(ok)} of {len(rows)} trials finished.", "",
             f"Best: {', '.join(f'`{k}: {cell(v)}`' for k, v in best['config'].items())} → {best['score']:.4f}", "",
             *markdown(header, [[cell(v) for v in r] for r in rows])]
    atomic_write_text(out / "tune.md", "\n".join(lines) + "\n")
    return best
