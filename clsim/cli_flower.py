"""``clsim flower …``: a scenario's federated strategy on real Flower processes — certificates,
SuperNode keys, SuperLink connections, and ``launch`` (a whole local federation in one command).
"""
from __future__ import annotations

import functools
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from clsim.config import ConfigError
from clsim.console import console, elapsed, err_console, friendly_errors

app = typer.Typer(no_args_is_help=True, help="Run a scenario's federated strategy on real Flower processes "
                                                    "(SuperLink + SuperNodes + `flwr run`; see the README).")


@app.command("certs")
@friendly_errors
def flower_certs(
    out_dir: Path = typer.Argument(..., metavar="DIR", help="Folder for ca.crt, server.pem, server.key (created)."),
    name: Optional[list[str]] = typer.Option(None, "--name", help="Extra host name or IP the SuperLink is reached "
                                                                  "at (localhost, 127.0.0.1, ::1 always included)."),
    days: int = typer.Option(365, min=1, help="Validity in days."),
):
    """Make a local CA and a SuperLink certificate for TLS on loopback (or the names given)."""
    from clsim.federated.certs import make_certs  # here: cryptography's import is slow for the other commands

    paths = make_certs(out_dir, name or (), days)
    console.print(f"[green]wrote[/] {paths['ca_cert']}, {paths['cert']}, {paths['key']} "
                  f"(and the CA key {paths['ca_key']})")
    console.print(f"  SuperLink:  --ssl-ca-certfile {paths['ca_cert']} --ssl-certfile {paths['cert']} "
                  f"--ssl-keyfile {paths['key']}", highlight=False, soft_wrap=True)
    console.print(f"  SuperNodes: --root-certificates {paths['ca_cert']}", highlight=False, soft_wrap=True)
    console.print(f"  flwr:       clsim flower connection NAME --address HOST:PORT --certs {out_dir}", highlight=False,
                  soft_wrap=True)


@app.command("connection")
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
    from clsim.federated.launch import write_connection  # here: Flower takes seconds to import

    if bool(certs) == insecure:
        raise ConfigError(None, "--certs/--insecure", "give exactly one: --certs DIR for TLS, or --insecure")
    if certs is not None and not (certs / "ca.crt").is_file():
        raise ConfigError(None, "--certs", f"{certs / 'ca.crt'} not found; make it with `clsim flower certs {certs}`")
    path = write_connection(name, address, certs / "ca.crt" if certs else None, default)
    console.print(f"[green]ok[/] connection {name!r} -> {address} ({'TLS' if certs else 'insecure'}) in {path}")


@app.command("keys")
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
    from clsim.federated.keys import make_node_keys, node_key_paths  # here: as make_certs (cryptography)

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
        say(f"\n# {3 + i}. on SuperNode machine {i} (copy {certs}/ca.crt and {private} there; its clients' "
            f"continual-learning state stays in state-dir, so a run can resume)\n"
            f"flower-supernode --root-certificates {certs}/ca.crt --superlink {superlink} "
            f"--auth-supernode-private-key {private} --node-config \"partition-id={i} num-partitions={nodes} "
            f"state-dir='~/clsim-state'\"")
    say(f"\n# {3 + nodes}. run a strategy with {nodes} clients (from the clsim project folder)\n"
        f"flwr run . {connection} --stream --run-config \"scenario='scenarios/SCENARIO.yaml' strategy='NAME' "
        f"output='results'\"")
    say(f"# if it stops (results/<scenario>/<run id>/ on the SuperLink machine), continue it from its last round:\n"
        f"flwr run . {connection} --stream --run-config \"resume='results/<scenario>/<run id>'\"")


@app.command("launch")
@friendly_errors
def flower_launch(
    scenario_file: Optional[Path] = typer.Argument(None, metavar="SCENARIO.yaml", help="Scenario file."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="A federated strategy of the scenario."),
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
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="RUN_DIR",
                                          help="Continue an interrupted launch from its last round checkpoint (the "
                                               "run's own scenario, strategy, nodes, certificates and keys)."),
):
    """Run a federated strategy on real Flower processes on this machine (SuperLink with TLS and SuperNode auth, one SuperNode per client, flwr run), then stop them all.

    Certificates, node keys, a private FLWR_HOME and the Flower logs go to <run>/flower/; results
    to OUTPUT/<scenario>/<run id>/ as with `clsim run`. `--resume RUN_DIR` continues an interrupted
    launch."""
    from clsim.federated.deploy import execute, prepare_launch, prepare_resume  # here: Flower takes seconds to import
    from clsim.federated.processes import DeployError

    t0 = time.perf_counter()
    if resume is not None:
        given = [name for name, value in (("SCENARIO.yaml", scenario_file), ("--strategy", strategy), ("--nodes", nodes),
                                          ("--output", output), ("--insecure", insecure or None), ("--run-id", run_id),
                                          ("--keys", keys), ("--certs", certs)) if value is not None]
        if given:
            raise ConfigError(None, "--resume", f"takes the run's own settings; drop {', '.join(given)} "
                                                "(only --port may be given again)")
        launch = prepare_resume(resume, port)
    else:
        if scenario_file is None or strategy is None:
            raise ConfigError(None, "SCENARIO.yaml" if scenario_file is None else "--strategy",
                              "needed (or --resume RUN_DIR to continue a launch)")
        launch = prepare_launch(scenario_file, strategy, nodes, output, insecure, run_id, port, keys, certs)
    console.print(f"[bold]{launch.job.scenario.name}[/] / {launch.job.name} on {launch.nodes} SuperNodes -> "
                  f"{launch.run_dir}{' (resuming)' if launch.resume else ''}", highlight=False)

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
                          f"results so far in {launch.run_dir}; continue with: clsim flower launch --resume "
                          f"{launch.run_dir}", highlight=False, soft_wrap=True)
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
                          f"far in {result.run_dir}; Flower logs in {launch.flower_dir}; continue with: clsim flower "
                          f"launch --resume {result.run_dir}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"results:     {result.run_dir}/summary.md, {result.run_dir}/{result.strategy}/metrics.json")
    console.print(f"Flower logs: {launch.flower_dir}")
    console.print(f"TensorBoard: tensorboard --logdir {result.run_dir}")
