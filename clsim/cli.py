"""The ``clsim`` command line: run, validate, list.

Bad input of any kind (scenario, preset, data, model, arguments) prints one line naming the
file, the field and what was expected, and exits with code 2 — never a traceback.
"""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clsim.config import ConfigError, load_scenario

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Continual and federated learning on drifting text streams.")
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)
ROOT = Path(__file__).resolve().parents[1]


def friendly_errors(fn):
    """Turn a ConfigError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _prepare(scenario_file: Path, strategies: Optional[str], seed: Optional[int]):
    """Validate the scenario and every preset, build the stream, check the model: no training yet."""
    from clsim.data import build_stream
    from clsim.models import resolve_pretrained
    from clsim.runner import plan

    scenario = load_scenario(scenario_file)
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    only = [s.strip() for s in strategies.split(",") if s.strip()] if strategies else None
    p = plan(scenario, scenario_file, only)
    resolve_pretrained(scenario.model.pretrained, scenario_file)
    stream = build_stream(scenario.stream, scenario.seed, scenario_file)
    return p, stream


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

    return update


def _summary_table(docs: list[dict]) -> Table:
    table = Table(title="summary (accuracy in [0, 1]; bwt < 0 and forgetting > 0 mean forgetting)")
    for col in ("strategy", "acc", "bwt", "fwt", "forgetting", "learning_acc", "train s", "samples", "trainable"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for d in docs:
        c = d["costs"]
        fmt = lambda v: "—" if v is None or v != v else f"{v:+.3f}" if v < 0 else f"{v:.3f}"  # noqa: E731
        table.add_row(d["strategy"], *(fmt(d.get(k)) for k in ("acc", "bwt", "fwt", "forgetting", "learning_acc")),
                      f"{c['train_seconds']:.1f}", str(c["samples_trained"]), f"{c['trainable_params']:,}")
    return table


@app.command()
@friendly_errors
def run(
    scenario_file: Path = typer.Argument(..., metavar="SCENARIO.yaml", help="Scenario file."),
    strategies: Optional[str] = typer.Option(None, help="Comma-separated subset of the scenario's strategies."),
    output: Path = typer.Option(Path("results"), help="Output root; runs go to OUTPUT/<scenario>/<run id>/."),
    seed: Optional[int] = typer.Option(None, min=0, help="Override the scenario's seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    ray_address: Optional[str] = typer.Option(None, help="Join an existing Ray cluster (default: local Ray)."),
    run_id: Optional[str] = typer.Option(None, help="Name of the run folder (default: UTC timestamp)."),
):
    """Run every strategy of a scenario side by side and write TensorBoard logs and results."""
    from clsim.models import tokenize_stream
    from clsim.runner import elapsed, execute, new_run_dir

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(None, "--device", f"expected auto, cpu or cuda, got {device!r}")
    t0 = time.perf_counter()
    p, stream = _prepare(scenario_file, strategies, seed)
    sc = p.scenario
    console.print(f"[bold]{sc.name}[/]: {len(stream.experiences)} experiences "
                  f"({', '.join(e.name for e in stream.experiences)}), model {sc.model.pretrained} "
                  f"({sc.model.finetune}), strategies: {', '.join(s.name for s in p.specs)}")
    with console.status("tokenising the stream (once for all strategies)"):
        tokens = tokenize_stream(stream, sc.model)
    run_dir = new_run_dir(output, sc, run_id)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        docs = execute(p, tokens, run_dir, device, ray_address, _progress_callback(progress, tokens.names))
    console.print(_summary_table(docs))
    console.print(f"wall time {elapsed(t0)}")
    console.print(f"results:     {run_dir}/summary.md, {run_dir}/<strategy>/metrics.json")
    console.print(f"TensorBoard: tensorboard --logdir {run_dir}")


@app.command()
@friendly_errors
def validate(scenario_file: Path = typer.Argument(..., metavar="SCENARIO.yaml")):
    """Check a scenario and every strategy it names; print what would run."""
    p, stream = _prepare(scenario_file, None, None)
    sc = p.scenario
    console.print(f"[green]ok[/] {scenario_file}: scenario [bold]{sc.name}[/], seed {sc.seed}")
    console.print(f"  model: {sc.model.pretrained}, finetune {sc.model.finetune}, max_length {sc.model.max_length}")
    console.print(f"  labels: {', '.join(stream.label_names)}")
    for e in stream.experiences:
        console.print(f"  experience {e.name}: {len(e.train.texts)} train / {len(e.test.texts)} test")
    for s in p.specs:
        comps = ", ".join(f"{c.cls.__name__}({', '.join(f'{k}={v}' for k, v in c.params.items())})"
                          for c in [s.template, *s.plugins])
        console.print(f"  strategy {s.name}: {comps}")


@app.command("list")
def list_(root: Path = typer.Option(ROOT, help="Project folder holding scenarios/ and strategies/.")):
    """Scenarios in scenarios/ and strategy presets in strategies/, one line each."""
    from clsim.strategies import available_presets

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


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
