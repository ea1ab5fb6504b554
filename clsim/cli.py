"""The ``clsim`` command line: run, validate, list, compare, bench; ``flower …`` lives in
``clsim.cli_flower``. Errors print as one line and exit 2 (``clsim.console``)."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

import typer
import typer.core
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clsim import cli_flower
from clsim.config import ConfigError, available_presets, describe, resolve
from clsim.console import OneLineErrors, console, elapsed, err_console, friendly_errors
from clsim.data import build_stream, split_record
from clsim.federated.schema import FEDERATED
from clsim.results import new_run_dir, read_plan, write_plan, write_splits
from clsim.sinks import write_json
from clsim.tables import CONSOLE, fmt
from clsim.tables import table as results_table

app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Continual and federated learning on drifting text streams.")
ROOT = Path(__file__).resolve().parents[1]
app.add_typer(cli_flower.app, name="flower")
EXTENSIONS = (FEDERATED,)  # preset blocks beyond template + plugins that `clsim` knows


def _list(text: Optional[str]) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _seeds(text: Optional[str]) -> list[int] | None:
    try:
        return [int(s) for s in _list(text)] if text else None
    except ValueError:
        raise ConfigError(None, "--seeds", f"expected comma-separated integers, got {text!r}") from None


def _prepare(scenario_file: Path, strategies: Optional[str], seeds: Optional[str]):
    """The checked plan and the stream of each seed (data read, splits drawn): no training yet."""
    plan = resolve(scenario_file, seeds=_seeds(seeds), only=_list(strategies), extensions=EXTENSIONS)
    return plan, _streams(plan)


def _streams(plan) -> dict:
    return {seed: build_stream(plan.scenario.stream, seed, plan.file) for seed in plan.seeds}


def _progress_callback(progress: Progress, names: list[str]):
    tasks: dict[str, int] = {}

    def update(run: str, phase: str, i: int, done: int, total: int):
        if run not in tasks:
            tasks[run] = progress.add_task(run, total=None)
        tid = tasks[run]
        if phase == "train":
            where = f"{run:<22} exp {i + 1}/{len(names)} {names[i]:<12} train"
            progress.update(tid, description=where, completed=done, total=max(total, 1))
        elif phase == "eval":
            progress.update(tid, description=f"{run:<22} zero-shot eval")
        elif phase == "done_exp":
            progress.update(tid, description=f"{run:<22} exp {i + 1}/{len(names)} {names[i]:<12} evaluated")
        elif phase == "finished":
            progress.update(tid, description=f"{run:<22} [green]done", completed=1, total=1)
        elif phase == "restart":
            progress.console.print(f"[yellow]{run}: its Ray actor died; restarted ({done}/{total}), "
                                   "resuming from its last checkpoint", highlight=False)
        elif phase == "failed":
            progress.update(tid, description=f"{run:<22} [red]failed")

    return update


def _table(title: str, docs: list[dict], labels: list[str] | None = None) -> Table:
    """The summary table (clsim.tables.COLUMNS; the CONSOLE columns of it) for the console."""
    cols, rows = results_table(docs, labels)
    keep = [k for k, c in enumerate(cols) if c.key in CONSOLE]
    table = Table(title=title)
    for k in keep:
        table.add_column(cols[k].title, justify="left" if cols[k].kind == "text" else "right", no_wrap=True)
    for r in rows:
        table.add_row(*(fmt(r[k], cols[k].kind) for k in keep))
    return table


def _exit(code: int) -> None:
    """Exit with ``code``. A federated simulation interrupted mid-round leaves Flower's ServerApp
    thread running (it is not a daemon); everything is saved by now, so do not wait for it."""
    others = [t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.main_thread()]
    if others:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


@app.command()
@friendly_errors
def run(
    scenario_file: Optional[Path] = typer.Argument(None, metavar="SCENARIO.yaml",
                                                   help="Scenario file (omit it with --resume)."),
    strategies: Optional[str] = typer.Option(None, help="Comma-separated subset of the scenario's strategies."),
    output: Optional[Path] = typer.Option(None, help="Output root; runs go to OUTPUT/<scenario>/<run id>/ "
                                                     "[default: results]."),
    seeds: Optional[str] = typer.Option(None, "--seeds", "--seed", metavar="N[,N...]",
                                        help="Override the scenario's seeds: every strategy runs once per seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    ray_address: Optional[str] = typer.Option(None, help="Join an existing Ray cluster (default: local Ray)."),
    run_id: Optional[str] = typer.Option(None, help="Name of the run folder (default: UTC timestamp)."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="RUN_DIR",
                                          help="Continue an interrupted run: every unfinished strategy resumes "
                                               "from its last checkpoint; finished ones are kept."),
    max_restarts: int = typer.Option(2, min=0, help="Times a strategy's Ray actor is restarted (and resumed "
                                                    "from its checkpoint) after its process dies."),
):
    """Run every strategy of a scenario side by side and write TensorBoard logs and results."""
    # here, not at the top: torch, Ray and Flower take seconds to import, and validate/list need none of them;
    # what libraries warn about while they import (deprecations in their own dependencies) is for their developers
    with warnings.catch_warnings(record=True):
        from clsim.execution import execute, run_log
        from clsim.models import tokenize_stream
        from clsim.runner import TERMINATED

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(None, "--device", f"expected auto, cpu or cuda, got {device!r}")
    if resume is not None:
        if scenario_file is not None:
            raise ConfigError(None, "--resume", "give a SCENARIO.yaml or --resume RUN_DIR, not both")
        fixed = [flag for flag, v in (("--strategies", strategies), ("--seeds", seeds), ("--output", output),
                                      ("--run-id", run_id)) if v is not None]
        if fixed:
            raise ConfigError(None, fixed[0], "cannot be combined with --resume: a resumed run keeps its own")
    elif scenario_file is None:
        raise ConfigError(None, "SCENARIO.yaml", "missing; give a scenario file, or --resume RUN_DIR to continue a run")
    t0 = time.perf_counter()
    if resume is not None:
        p = read_plan(resume, EXTENSIONS)
        streams = _streams(p)
    else:
        p, streams = _prepare(scenario_file, strategies, seeds)
    sc, stream = p.scenario, streams[p.seeds[0]]
    run_dir = resume if resume is not None else new_run_dir(output or Path("results"), sc.name, run_id)
    if resume is None:
        write_splits(run_dir, {seed: split_record(s) for seed, s in streams.items()})
    console.print(f"[bold]{sc.name}[/]: {len(stream.experiences)} experiences "
                  f"({', '.join(e.name for e in stream.experiences)}), model {sc.model.pretrained} "
                  f"({sc.model.finetune}), strategies: {', '.join(s.name for s in p.strategies)}, "
                  f"seed{'s' * (len(p.seeds) > 1)} {', '.join(map(str, p.seeds))}"
                  + (f"; resuming {run_dir}" if resume is not None else ""))
    with console.status("tokenising the stream (once per seed, for all strategies)"):
        tokens = {seed: tokenize_stream(s, sc.model) for seed, s in streams.items()}
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            with run_log(run_dir):
                docs = execute(p, tokens, run_dir, device, ray_address, _progress_callback(progress, [e.name for e in stream.experiences]),
                               resume=resume is not None, max_restarts=max_restarts)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (runner._on_sigterm)
        err_console.print(f"{'terminated' if TERMINATED else 'interrupted'}: finished experiences "
                          f"are checkpointed; continue with `clsim run --resume {run_dir}`",
                          highlight=False, soft_wrap=True)
        _exit(143 if TERMINATED else 130)
    console.print(_table("summary (accuracy in [0, 1]; bwt < 0 and forgetting > 0 mean forgetting)", docs))
    console.print(f"wall time {elapsed(t0)}")
    console.print(f"results:     {run_dir}/summary.md, {run_dir}/<strategy>/metrics.json (over seeds), "
                  f"{run_dir}/<strategy>/seed_<k>/")
    console.print(f"TensorBoard: tensorboard --logdir {run_dir}")
    unfinished = [d for d in docs if not d.get("complete")]
    if unfinished:
        why = "; ".join(f"{d['strategy']}: {d.get('error', 'did not finish')}" for d in unfinished)
        err_console.print(f"[bold red]incomplete:[/] {escape(why)}; continue with `clsim run --resume {run_dir}`",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
@friendly_errors
def validate(scenario_file: Path = typer.Argument(..., metavar="SCENARIO.yaml")):
    """Check a scenario and every strategy it names; print what would run."""
    p, streams = _prepare(scenario_file, None, None)
    sc, stream = p.scenario, streams[p.seeds[0]]
    console.print(f"[green]ok[/] {scenario_file}: scenario [bold]{sc.name}[/], "
                  f"seed{'s' * (len(p.seeds) > 1)} {', '.join(map(str, p.seeds))}")
    console.print(f"  model: {sc.model.pretrained}, finetune {sc.model.finetune}, max_length {sc.model.max_length}")
    console.print(f"  labels: {', '.join(stream.label_names)}")
    st = sc.stream
    if st.protocol == "online":
        console.print(f"  protocol: online — {stream.experiences[0].name} is the deployment fit, the rest arrive "
                      f"{st.arrival_batch} per time step ({st.transition.kind} transitions"
                      + (f" over {st.transition.width} steps" if st.transition.kind == "gradual" else "")
                      + f"), labels {st.label_delay} step(s) later for {st.label_fraction:.0%} of arrivals",
                      highlight=False)
    for e in stream.experiences:
        console.print(f"  experience {e.name}: {len(e.train)} train / {len(e.val)} val / {len(e.test)} test")
    for name, what in describe(p):
        console.print(f"  strategy {name}: {what}", highlight=False)


@app.command("list")
@friendly_errors
def list_(root: Path = typer.Option(ROOT, help="Project folder holding scenarios/ and strategies/.")):
    """Scenarios in scenarios/ and strategy presets in strategies/, one line each."""
    if not (root / "scenarios").is_dir():
        raise ConfigError(None, "--root", f"expected a project folder holding scenarios/, got {root}")

    def first_comment(path: Path) -> str:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("# ").strip()
        return ""

    console.print("[bold]scenarios[/]")
    for f in sorted((root / "scenarios").glob("*.yaml")):
        console.print(f"  {f.stem:<24} {first_comment(f)}", highlight=False)
    console.print("[bold]strategies[/]")
    for name, f in available_presets().items():
        console.print(f"  {name:<24} {first_comment(f)}", highlight=False)


@app.command()
@friendly_errors
def compare(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR...",
                                          help="Run folders (or strategy / scenario folders) holding metrics.json."),
    output: Optional[Path] = typer.Option(None, help="Where to write the report (default: the run folder when "
                                                     "there is one, else ./comparison)."),
    baseline: Optional[list[str]] = typer.Option(None, help="Also show paired differences to this strategy "
                                                            "(repeatable)."),
    pool_seeds: bool = typer.Option(False, "--pool-seeds", help="One entry per strategy over the seeds of every "
                                    "run given (same strategy and recipe, different seeds)."),
):
    """Compare strategies from one or more runs: a table, comparison.md/.csv and PNG plots."""
    from clsim import report  # here: matplotlib takes a second to import

    entries = report.load(run_dirs, pool_seeds)
    out = output or (run_dirs[0] if len(run_dirs) == 1 and run_dirs[0].is_dir() else Path("comparison"))
    written = report.write_comparison(entries, out, baseline or ())
    console.print(_table("comparison (accuracy in [0, 1]; bwt < 0 and forgetting > 0 mean forgetting)",
                         [e.doc for e in entries], [e.label for e in entries]))
    console.print(f"report: {written['comparison.md']}, {written['comparison.csv']}")
    console.print("plots:  " + ", ".join(str(p) for name, p in written.items() if name.endswith(".png")))


# ----------------------------------------------------------------------------- clsim flower …
@app.command()
@friendly_errors
def tune(
    scenario_file: Optional[Path] = typer.Argument(None, metavar="SCENARIO.yaml",
                                                   help="Scenario file (omit it with --resume)."),
    strategy: Optional[str] = typer.Option(None, help="The strategy (run name) to tune."),
    space: Optional[list[str]] = typer.Option(None, "--space", metavar="NAME=KIND:ARGS",
                                              help="A searched parameter, e.g. ewc_lambda=loguniform:1e4:1e7 or "
                                                   "mem_size=choice:100,200,400 (repeatable; replaces the "
                                                   "scenario's tune.space for the strategy)."),
    samples: Optional[int] = typer.Option(None, min=1, help="Trials [default: the scenario's tune.samples, or 8]."),
    output: Optional[Path] = typer.Option(None, help="Output root [default: results]."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="TUNE_DIR",
                                          help="Continue an interrupted search: finished trials are kept."),
):
    """Search a strategy's hyper-parameters with Ray Tune, scored on validation splits only."""
    with warnings.catch_warnings(record=True):  # here: as in `run` (torch, Ray)
        from clsim import tuning
        from clsim.learner import resolve_device
        from clsim.models import tokenize_stream
        from clsim.runner import start_ray

    from clsim.config.scenario import TuneConfig

    if resume is not None:
        if scenario_file is not None or strategy or space or samples:
            raise ConfigError(None, "--resume", "a resumed search keeps its scenario, strategy and space")
        p = read_plan(resume, EXTENSIONS)
        meta = json.loads((resume / tuning.TUNE_FILE).read_text(encoding="utf-8"))
        name, cfg, out = meta["strategy"], TuneConfig.model_validate(meta["tune"]), resume
    else:
        if scenario_file is None or not strategy:
            raise ConfigError(None, "SCENARIO.yaml" if scenario_file is None else "--strategy",
                              "missing; give a scenario file and --strategy NAME (or --resume TUNE_DIR)")
        p = resolve(scenario_file, extensions=EXTENSIONS)
        cfg = p.scenario.tune or TuneConfig()
        name = strategy
        if space:
            cfg = cfg.model_copy(update={"space": {**cfg.space, name: tuning.parse_space(space)}})
        if samples:
            cfg = cfg.model_copy(update={"samples": samples})
        tuning.check(p, name, cfg.space.get(name, {}), EXTENSIONS)
        out = new_run_dir(output or Path("results"), p.scenario.name,
                          f"tune-{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
        write_plan(p, out)
    seed = p.seeds[0]
    one = p.for_seed(seed)
    stream = build_stream(one.scenario.stream, seed, p.file)
    tokens = tokenize_stream(stream, one.scenario.model)
    write_splits(out, {seed: split_record(stream)})
    t0 = time.perf_counter()
    start_ray(None)
    try:
        best = tuning.run(one, name, tokens, out, cfg, resolve_device(device), EXTENSIONS, resume is not None,
                          say=lambda s: console.print(s, highlight=False))
    finally:
        import ray  # here: started by start_ray above

        ray.shutdown()
    console.print(f"best {name}: {best['config']} → {cfg.metric} {best['score']:.4f} on validation "
                  f"({best['finished']} of {best['trials']} trials); wall time {elapsed(t0)}", highlight=False)
    console.print(f"report: {out}/tune.md, {out}/trials.csv, {out}/best.json; continue with "
                  f"`clsim tune --resume {out}`", highlight=False)


@app.command()
@friendly_errors
def bench(
    json_file: Optional[Path] = typer.Option(None, "--json", help="Also write {name: ratio} to this JSON file "
                                                                   "(after every measure)."),
    tiny: bool = typer.Option(False, "--tiny", help="Synthetic stream + tiny model: seconds, for tests."),
    repeats: Optional[int] = typer.Option(None, min=1, help="Timed passes per variant; the best counts "
                                                            "(default 2, --tiny 1)."),
    only: Optional[str] = typer.Option(None, "--only", metavar="NAME,…", help="Only these measures (names as in the "
                                                                             "table, or flower_scale)."),
):
    """Measure clsim's performance ratios (tweets + MiniLM) and print them against their goals."""
    from clsim import bench as B  # here: torch, Ray and Flower take seconds to import

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    B.selected(names)  # an unknown name: one line, exit 2, before anything runs
    cfg = B.BenchConfig(tiny=tiny, repeats=repeats or (1 if tiny else 2))
    t0 = time.perf_counter()
    done: list = []
    scale: list = []

    def value(r) -> str:
        if r.value is None:
            return "skipped" if r.detail.startswith("skipped") else "missing"
        if "points" in r.name or "overhead" in r.name or "_gb_" in r.name:
            return f"{r.value:.2f}"
        return f"{r.value:.3g}" if r.value < 0.1 else f"{r.value:.2f}×"

    def met(r) -> str:
        return {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[r.met]

    def on_result(r) -> None:  # each measure as soon as it is known; the JSON rewritten after each
        done.append(r)
        console.print(f"[bold]{r.name}[/] {value(r)} (goal {r.goal}: {met(r)}) {escape(r.detail)}", highlight=False,
                      soft_wrap=True)
        if json_file:
            write_json(json_file, B.as_json(done, scale))

    results = B.run(cfg, say=lambda s: console.print(f"[dim]bench:[/] {s}", highlight=False), on_result=on_result,
                    only=names, scale_rows=scale)
    table = Table(title=f"clsim bench ({'tiny: synthetic + tiny model' if tiny else 'tweets + MiniLM'}, "
                        f"best of {cfg.repeats})")
    for col in ("measure", "value", "goal", "met", "detail"):
        table.add_column(col, justify="right" if col in ("value", "goal") else "left")
    for r in results:
        table.add_row(r.name, value(r), r.goal, met(r), escape(r.detail))
    console.print(table)
    if scale:
        rows = Table(title="flower_scale: FedAvg + LoRA, clients sampled per round fixed")
        for col in ("clients", "sampled", "round wall s", "train s / workers", "set-up s", "overhead",
                    "CPU s / round", "server CPU s", "peak PSS GB", "peak RSS GB", "run s"):
            rows.add_column(col, justify="right")
        for r in scale:
            rows.add_row(str(r.clients), str(r.sampled), f"{r.round_wall:.2f}", f"{r.train:.2f} / {r.workers}",
                         f"{r.setup:.2f}", f"{r.overhead:.0%}", f"{r.total_cpu:.1f}", f"{r.server_cpu:.1f}",
                         f"{r.peak_pss_gb:.2f}", f"{r.peak_rss_gb:.2f}", f"{r.seconds:.0f}")
        console.print(rows)
    console.print(f"wall time {time.perf_counter() - t0:.0f} s")
    if json_file:
        write_json(json_file, B.as_json(results, scale))
        console.print(f"ratios: {json_file}")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
