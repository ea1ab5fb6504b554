"""The ``clsim`` command line: run, validate, list, compare, bench, flower (certs, connection, keys, launch).

Bad input of any kind (scenario, preset, data, model, arguments) prints one line naming the
file, the field and what was expected, and exits with code 2 — never a traceback.
"""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Optional

import click
import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clsim.config import ConfigError, load_scenario

console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)


class OneLineErrors(typer.core.TyperGroup):
    """Bad command-line arguments (unknown option or command, bad or missing value) print one
    line naming the command and the option, and exit 2 — like bad scenario files."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `clsim`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) else ""
            message = " ".join(exc.format_message().split())
            err_console.print(f"[bold red]error:[/] {escape(where + message)}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            err_console.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Continual and federated learning on drifting text streams.")
ROOT = Path(__file__).resolve().parents[1]


def friendly_errors(fn):
    """Turn a ConfigError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _prepare(scenario_file: Path, strategies: Optional[str], seed: Optional[int]):
    """Validate the scenario and every preset, build the stream, check the model: no training yet."""
    from clsim.data import build_stream
    from clsim.models import check_model, resolve_pretrained
    from clsim.runner import plan

    scenario = load_scenario(scenario_file)
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    only = [s.strip() for s in strategies.split(",") if s.strip()] if strategies else None
    p = plan(scenario, scenario_file, only)
    resolve_pretrained(scenario.model.pretrained, scenario_file)
    check_model(scenario.model, scenario_file)
    stream = build_stream(scenario.stream, scenario.seed, scenario_file)
    return p, stream


def _prepare_resume(run_dir: Path):
    """The plan and stream of an interrupted run, from its folder (checked like a new run)."""
    from clsim.data import build_stream
    from clsim.models import check_model, resolve_pretrained
    from clsim.runner import plan, read_run

    scenario, scenario_file, names = read_run(run_dir)
    p = plan(scenario, scenario_file, names)
    resolve_pretrained(scenario.model.pretrained, scenario_file)
    check_model(scenario.model, scenario_file)
    return p, build_stream(scenario.stream, scenario.seed, scenario_file)


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


def _summary_table(docs: list[dict]) -> Table:
    table = Table(title="summary (accuracy in [0, 1]; bwt < 0 and forgetting > 0 mean forgetting)")
    for col in ("strategy", "acc", "bwt", "fwt", "forgetting", "learning_acc", "train s", "samples", "trainable"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for d in docs:
        c = d.get("costs") or {}  # a strategy that never finished an experience has none
        fmt = lambda v: "—" if v is None or v != v else f"{v:+.3f}" if v < 0 else f"{v:.3f}"  # noqa: E731
        num = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
        name = d["strategy"] + ("" if d.get("complete") else " (incomplete)")
        table.add_row(name, *(fmt(d.get(k)) for k in ("acc", "bwt", "fwt", "forgetting", "learning_acc")),
                      num(c.get("train_seconds"), ".1f"), num(c.get("samples_trained"), "d"),
                      num(c.get("trainable_params"), ","))
    return table


def _exit(code: int) -> None:
    """Exit with ``code``. A federated simulation interrupted mid-round leaves Flower's ServerApp
    thread running (it is not a daemon); everything is saved by now, so do not wait for it."""
    import os
    import threading

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
    seed: Optional[int] = typer.Option(None, min=0, help="Override the scenario's seed."),
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
    from clsim.models import tokenize_stream
    from clsim.runner import elapsed, execute, new_run_dir

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(None, "--device", f"expected auto, cpu or cuda, got {device!r}")
    if resume is not None:
        if scenario_file is not None:
            raise ConfigError(None, "--resume", "give a SCENARIO.yaml or --resume RUN_DIR, not both")
        fixed = [flag for flag, v in (("--strategies", strategies), ("--seed", seed), ("--output", output),
                                      ("--run-id", run_id)) if v is not None]
        if fixed:
            raise ConfigError(None, fixed[0], "cannot be combined with --resume: a resumed run keeps its own")
    elif scenario_file is None:
        raise ConfigError(None, "SCENARIO.yaml", "missing; give a scenario file, or --resume RUN_DIR to continue a run")
    t0 = time.perf_counter()
    p, stream = _prepare_resume(resume) if resume is not None else _prepare(scenario_file, strategies, seed)
    sc = p.scenario
    run_dir = resume if resume is not None else new_run_dir(output or Path("results"), sc, run_id)
    console.print(f"[bold]{sc.name}[/]: {len(stream.experiences)} experiences "
                  f"({', '.join(e.name for e in stream.experiences)}), model {sc.model.pretrained} "
                  f"({sc.model.finetune}), strategies: {', '.join(s.name for s in p.specs)}"
                  + (f"; resuming {run_dir}" if resume is not None else ""))
    with console.status("tokenising the stream (once for all strategies)"):
        tokens = tokenize_stream(stream, sc.model)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            docs = execute(p, tokens, run_dir, device, ray_address, _progress_callback(progress, tokens.names),
                           resume=resume is not None, max_restarts=max_restarts)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (runner._on_sigterm)
        from clsim.runner import TERMINATED

        err_console.print(f"{'terminated' if TERMINATED else 'interrupted'}: finished experiences "
                          f"are checkpointed; continue with `clsim run --resume {run_dir}`",
                          highlight=False, soft_wrap=True)
        _exit(143 if TERMINATED else 130)
    console.print(_summary_table(docs))
    console.print(f"wall time {elapsed(t0)}")
    console.print(f"results:     {run_dir}/summary.md, {run_dir}/<strategy>/metrics.json")
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
        if s.federated is not None:  # Flower: the server strategy, and what every client runs
            f = s.federated
            comps = (f"Flower {f.server}({', '.join(f'{k}={v}' for k, v in f.server_params.items())}), "
                     f"{f.clients} clients ({f.partition.kind}), {f.rounds_per_experience} round(s)/experience; "
                     f"each client: {comps}")
        console.print(f"  strategy {s.name}: {comps}", highlight=False)


@app.command("list")
@friendly_errors
def list_(root: Path = typer.Option(ROOT, help="Project folder holding scenarios/ and strategies/.")):
    """Scenarios in scenarios/ and strategy presets in strategies/, one line each."""
    from clsim.strategies import available_presets

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
):
    """Compare strategies from one or more runs: a table, comparison.md/.csv and PNG plots."""
    from clsim import report

    entries = report.load(run_dirs)
    out = output or (run_dirs[0] if len(run_dirs) == 1 and run_dirs[0].is_dir() else Path("comparison"))
    written = report.write_comparison(entries, out)
    cols, rows = report.rows(entries)
    if all(r[cols.index("complete")] for r in rows):  # say so only when some run is partial
        rows = [r[:cols.index("complete")] + r[cols.index("complete") + 1:] for r in rows]
        cols.remove("complete")
    table = Table(title="comparison (accuracy in [0, 1]; bwt < 0 and forgetting > 0 mean forgetting)")
    for c in cols:
        table.add_column({"trainable_params": "trainable", "learning_acc": "learn_acc"}.get(c, c),
                         justify="left" if c == "strategy" else "right", no_wrap=c == "strategy")
    for r in rows:
        table.add_row(*(report.fmt(v, c) for v, c in zip(r, cols)))
    console.print(table)
    console.print(f"report: {written['comparison.md']}, {written['comparison.csv']}")
    console.print("plots:  " + ", ".join(str(p) for name, p in written.items() if name.endswith(".png")))


# ----------------------------------------------------------------------------- clsim flower …
flower_app = typer.Typer(no_args_is_help=True, help="Run a scenario's federated strategy on real Flower processes "
                                                    "(SuperLink + SuperNodes + `flwr run`; see the README).")
app.add_typer(flower_app, name="flower")


@flower_app.command("certs")
@friendly_errors
def flower_certs(
    out_dir: Path = typer.Argument(..., metavar="DIR", help="Folder for ca.crt, server.pem, server.key (created)."),
    name: Optional[list[str]] = typer.Option(None, "--name", help="Extra host name or IP the SuperLink is reached "
                                                                  "at (localhost, 127.0.0.1, ::1 always included)."),
    days: int = typer.Option(365, min=1, help="Validity in days."),
):
    """Make a local CA and a SuperLink certificate for TLS on loopback (or the names given)."""
    from clsim.federated.certs import make_certs

    paths = make_certs(out_dir, name or (), days)
    console.print(f"[green]wrote[/] {paths['ca_cert']}, {paths['cert']}, {paths['key']} "
                  f"(and the CA key {paths['ca_key']})")
    console.print(f"  SuperLink:  --ssl-ca-certfile {paths['ca_cert']} --ssl-certfile {paths['cert']} "
                  f"--ssl-keyfile {paths['key']}", highlight=False, soft_wrap=True)
    console.print(f"  SuperNodes: --root-certificates {paths['ca_cert']}", highlight=False, soft_wrap=True)
    console.print(f"  flwr:       clsim flower connection NAME --address HOST:PORT --certs {out_dir}", highlight=False,
                  soft_wrap=True)


@flower_app.command("connection")
@friendly_errors
def flower_connection(
    name: str = typer.Argument(..., help="Connection name, as in `flwr run . NAME`."),
    address: str = typer.Option("127.0.0.1:8000", help="The SuperLink's HOST:PORT (flower-superlink --port, "
                                                        "8000 by default)."),
    certs: Optional[Path] = typer.Option(None, help="Folder from `clsim flower certs` (TLS with its ca.crt)."),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext instead of TLS (must be explicit)."),
    default: bool = typer.Option(False, "--default", help="Also make it the default connection."),
):
    """Add or replace a SuperLink connection in Flower's config ($FLWR_HOME/config.toml)."""
    from clsim.federated.launch import write_connection

    if bool(certs) == insecure:
        raise ConfigError(None, "--certs/--insecure", "give exactly one: --certs DIR for TLS, or --insecure")
    if certs is not None and not (certs / "ca.crt").is_file():
        raise ConfigError(None, "--certs", f"{certs / 'ca.crt'} not found; make it with `clsim flower certs {certs}`")
    path = write_connection(name, address, certs / "ca.crt" if certs else None, default)
    console.print(f"[green]ok[/] connection {name!r} -> {address} ({'TLS' if certs else 'insecure'}) in {path}")


@flower_app.command("keys")
@friendly_errors
def flower_keys(
    out_dir: Path = typer.Argument(..., metavar="DIR", help="Folder for node<i> / node<i>.pub (created)."),
    nodes: int = typer.Option(..., "--nodes", min=1, help="How many SuperNodes (one per client of the strategy)."),
    superlink: str = typer.Option("SUPERLINK_HOST:8000", "--superlink", help="HOST:PORT the SuperNodes and flwr "
                                                                             "reach the SuperLink at."),
    certs: Path = typer.Option(Path("certs"), "--certs", help="Folder from `clsim flower certs` (TLS is required "
                                                             "for SuperNode authentication)."),
    connection: str = typer.Option("clsim", "--connection", help="Name of the flwr connection to the SuperLink."),
):
    """Make one SuperNode authentication key pair per node and print the commands for each machine."""
    from clsim.federated.keys import make_node_keys, node_key_paths

    host, _, port = superlink.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(None, "--superlink", f"expected HOST:PORT, got {superlink!r}")
    existing = [f for i in range(nodes) for f in node_key_paths(out_dir, i) if f.exists()]
    if existing:  # a registered key would silently stop working
        raise ConfigError(None, "DIR", f"{existing[0]} exists; keys are not overwritten (remove them or choose "
                                       "another folder)")
    pairs = make_node_keys(out_dir, nodes)
    say = functools.partial(console.print, highlight=False, soft_wrap=True)
    say(f"[green]wrote[/] {nodes} key pair(s) in {out_dir}: private node<i> (keep it on node i only), public node<i>.pub")
    if not (certs / "ca.crt").is_file():
        say(f"\n# 0. certificates (once): the SuperLink's name or IP must be in them\nclsim flower certs {certs} "
            f"--name {host}")
    say(f"\n# 1. on the SuperLink machine (copy {certs}/ca.crt, server.pem, server.key there)\n"
        f"flower-superlink --ssl-ca-certfile {certs}/ca.crt --ssl-certfile {certs}/server.pem "
        f"--ssl-keyfile {certs}/server.key --enable-supernode-auth --host 0.0.0.0 --port {port} "
        f"--disable-runtime-dependency-installation")
    say(f"\n# 2. where you run flwr (copy {certs}/ca.crt and the node<i>.pub files there)\n"
        f"clsim flower connection {connection} --address {superlink} --certs {certs}")
    for _, public in pairs:
        say(f"flwr supernode register {public} {connection}")
    for i, (private, _) in enumerate(pairs):
        say(f"\n# {3 + i}. on SuperNode machine {i} (copy {certs}/ca.crt and {private} there)\n"
            f"flower-supernode --root-certificates {certs}/ca.crt --superlink {superlink} "
            f"--auth-supernode-private-key {private} --node-config \"partition-id={i} num-partitions={nodes}\"")
    say(f"\n# {3 + nodes}. run a strategy with {nodes} clients (from the clsim project folder)\n"
        f"flwr run . {connection} --stream --run-config \"scenario='scenarios/SCENARIO.yaml' strategy='NAME' "
        f"output='results'\"")


@flower_app.command("launch")
@friendly_errors
def flower_launch(
    scenario_file: Path = typer.Argument(..., metavar="SCENARIO.yaml", help="Scenario file."),
    strategy: str = typer.Option(..., "--strategy", help="A federated strategy of the scenario."),
    nodes: Optional[int] = typer.Option(None, "--nodes", min=1, help="SuperNodes to start: one per client "
                                                                     "[default: the strategy's clients]."),
    output: Optional[Path] = typer.Option(None, help="Output root; the run goes to OUTPUT/<scenario>/<run id>/ "
                                                     "[default: results]."),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext, and no SuperNode authentication (Flower "
                                                            "allows it only over TLS)."),
    run_id: Optional[str] = typer.Option(None, help="Name of the run folder (default: UTC timestamp)."),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="The SuperLink's port on 127.0.0.1 "
                                                                   "[default: a free one]."),
    keys: Optional[Path] = typer.Option(None, help="Use these key pairs (`clsim flower keys`) instead of fresh ones."),
    certs: Optional[Path] = typer.Option(None, help="Use these certificates (`clsim flower certs`) instead of "
                                                    "fresh ones."),
):
    """Run a federated strategy on real Flower processes on this machine (SuperLink with TLS and SuperNode auth, one SuperNode per client, flwr run), then stop them all.

    Certificates, node keys, a private FLWR_HOME and the Flower logs go to <run>/flower/; results
    to OUTPUT/<scenario>/<run id>/ as with `clsim run`."""
    import signal

    from clsim.federated.deploy import execute, prepare_launch
    from clsim.federated.processes import DeployError
    from clsim.runner import elapsed

    t0 = time.perf_counter()
    launch = prepare_launch(scenario_file, strategy, nodes, output, insecure, run_id, port, keys, certs)
    console.print(f"[bold]{launch.job.scenario.name}[/] / {launch.job.name} on {launch.nodes} SuperNodes -> "
                  f"{launch.run_dir}", highlight=False)

    def echo(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    terminated = []

    def on_sigterm(signum, frame):  # `kill`, a batch system's time limit: stop as Ctrl-C does
        terminated.append(signum)
        raise KeyboardInterrupt("SIGTERM")

    saved = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = execute(launch, echo)
    except KeyboardInterrupt:
        err_console.print(f"{'terminated' if terminated else 'interrupted'}: every Flower process stopped; "
                          f"results so far in {launch.run_dir}", highlight=False, soft_wrap=True)
        raise typer.Exit(143 if terminated else 130)
    except DeployError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    finally:
        signal.signal(signal.SIGTERM, saved)
    console.print(f"wall time {elapsed(t0)}")
    if result.leftovers:
        err_console.print(f"[bold red]warning:[/] processes {result.leftovers} outlived the stop", highlight=False)
    if not result.complete:
        err_console.print(f"[bold red]incomplete:[/] {escape(result.error or 'the run did not finish')}; results so "
                          f"far in {result.run_dir}; Flower logs in {launch.flower_dir}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"results:     {result.run_dir}/summary.md, {result.run_dir}/{result.strategy}/metrics.json")
    console.print(f"Flower logs: {launch.flower_dir}")
    console.print(f"TensorBoard: tensorboard --logdir {result.run_dir}")


@app.command()
@friendly_errors
def bench(
    json_file: Optional[Path] = typer.Option(None, "--json", help="Also write {name: ratio} to this JSON file."),
    tiny: bool = typer.Option(False, "--tiny", help="Synthetic stream + tiny model: seconds, for tests."),
    repeats: Optional[int] = typer.Option(None, min=1, help="Timed passes per variant; the best counts "
                                                            "(default 2, --tiny 1)."),
):
    """Measure clsim's performance ratios (tweets + MiniLM) and print them against their goals."""
    from clsim import bench as B
    from clsim.sinks import write_json

    cfg = B.BenchConfig(tiny=tiny, repeats=repeats or (1 if tiny else 2))
    t0 = time.perf_counter()
    results = B.run(cfg, say=lambda s: console.print(f"[dim]bench:[/] {s}", highlight=False))
    table = Table(title=f"clsim bench ({'tiny: synthetic + tiny model' if tiny else 'tweets + MiniLM'}, "
                        f"best of {cfg.repeats})")
    for col in ("measure", "value", "goal", "met", "detail"):
        table.add_column(col, justify="right" if col in ("value", "goal") else "left")
    for r in results:
        value = "missing" if r.value is None else (f"{r.value:.2f}" if "points" in r.name or "overhead" in r.name
                                                   else f"{r.value:.3g}" if r.value < 0.1 else f"{r.value:.2f}×")
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[r.met]
        table.add_row(r.name, value, r.goal, met, escape(r.detail))
    console.print(table)
    console.print(f"wall time {time.perf_counter() - t0:.0f} s")
    if json_file:
        write_json(json_file, B.as_json(results))
        console.print(f"ratios: {json_file}")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
