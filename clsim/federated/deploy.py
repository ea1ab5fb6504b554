"""``clsim flower launch``: one federated strategy on real Flower processes on this machine.

A SuperLink, one SuperNode per client (``partition-id=i num-partitions=N``), their public keys
registered with ``flwr supernode register``, and the strategy submitted with ``flwr run
<project> <connection> --stream`` (:mod:`clsim.federated.processes` runs them). Results land
in ``<output>/<scenario>/<run id>/`` as with ``clsim run``; what the launch itself makes lives
beside them in ``<run>/flower/``:

- ``certs/``: a fresh CA and a SuperLink certificate for 127.0.0.1 (the CA key is deleted once
  the certificate is signed, so nothing else can be);
- ``keys/``: one OpenSSH EC key pair per SuperNode (:mod:`clsim.federated.keys`);
- ``home/``: a private ``FLWR_HOME`` per process; ``run_config.toml``; one log per process.

- ``launch.json``: how it was launched (strategy, nodes, TLS, keys), so a resume launches it
  the same way; ``pids.json``: every process started (:mod:`clsim.federated.pids`).

SuperNode authentication is on unless ``--insecure``: Flower allows ``--enable-supernode-auth``
only over TLS, so ``--insecure`` means plaintext *and* any SuperNode may join. Every input a
user can get wrong is checked before any process starts (:func:`prepare_launch`,
:func:`prepare_resume`).

``--resume RUN_DIR`` (:func:`prepare_resume`) continues an interrupted launch from its last
round checkpoint, like ``clsim run --resume``: a fresh SuperLink and SuperNodes with the run's
own certificates and keys, ``flwr run`` with ``resume=true``; the clients find their CL state in
``<run>/<strategy>/seed_<k>/clients/``. Processes an earlier, killed launcher left running are stopped
first; the earlier attempt's logs move to ``flower/attempt<k>/``.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import tomli_w

from clsim.config import ConfigError
from clsim.federated.certs import make_certs
from clsim.federated.job import Job, federated_job, load_job
from clsim.federated.keys import check_private_key, check_public_key, make_node_keys, node_key_paths
from clsim.federated.pids import PIDS_FILE, recorded_launcher, stop_recorded
from clsim.federated.processes import (
    ANSI,
    APP_ROOT,
    DEPLOYMENT_DIR,
    Deployment,
    Echo,
    flower_exe,
    log_tail,
    port_in_use,
)
from clsim.federated.schema import FEDERATED
from clsim.results import PLAN_FILE, finished_seeds, new_run_dir, partial_doc, read_plan, write_plan
from clsim.sinks import write_json
from clsim.tables import write_summary

LAUNCH_FILE = "launch.json"  # in <run>/flower/: how the run was launched


# --------------------------------------------------------------------------- the launch
@dataclass
class Launch:
    """A checked launch: the scenario, strategy and options are valid and the run folder exists;
    no process has started yet."""

    job: Job
    scenario_file: Path
    run_dir: Path
    nodes: int
    insecure: bool = False
    port: int | None = None
    keys: Path | None = None  # key pairs to use instead of fresh ones (``clsim flower keys``)
    certs: Path | None = None  # certificates to use instead of fresh ones (``clsim flower certs``)
    resume: bool = False  # continue the run in run_dir from its last round checkpoint

    @property
    def flower_dir(self) -> Path:
        return self.run_dir / DEPLOYMENT_DIR


@dataclass
class LaunchResult:
    run_dir: Path
    strategy: str
    status: str  # Flower's: finished:completed | finished:failed | finished:stopped | unknown
    complete: bool  # metrics.json has every experience's row
    error: str | None
    seconds: float
    node_ids: dict[int, int]  # partition -> Flower node id
    started: dict[int, str]  # PID -> command of every process started, and of their descendants seen
    leftovers: list[int]  # those still running after the stop (none, normally)


def prepare_launch(scenario_file: str | Path, strategy: str, nodes: int | None = None,
                   output: str | Path | None = None, insecure: bool = False, run_id: str | None = None,
                   port: int | None = None, keys: str | Path | None = None,
                   certs: str | Path | None = None) -> Launch:
    """Check everything a user can get wrong (ConfigError, one line) before anything starts;
    then make the run folder ``<output>/<scenario>/<run id>/``."""
    for exe in ("flower-superlink", "flower-supernode", "flwr"):
        flower_exe(exe)
    path = Path(scenario_file)
    if not path.is_file():
        raise ConfigError(None, "SCENARIO.yaml", f"{path} not found")
    try:
        job = load_job(path, strategy)
    except ConfigError as exc:
        if exc.field == "strategy":
            raise ConfigError(path, "--strategy", exc.message) from None
        raise
    clients = job.fed.clients
    nodes = clients if nodes is None else nodes
    if nodes < clients:
        raise ConfigError(None, "--nodes", f"{nodes} SuperNode(s) for the {clients} clients of strategy "
                                           f"{job.name!r}: every client's partition needs its own SuperNode")
    if nodes > clients:
        raise ConfigError(None, "--nodes", f"{nodes} SuperNodes for the {clients} clients of strategy {job.name!r}: a "
                                           f"SuperNode serves one partition, so the server would refuse the rest")
    if insecure and (keys or certs):
        raise ConfigError(None, "--insecure", "cannot be combined with --keys/--certs (Flower allows SuperNode "
                                              "authentication only over TLS)")
    keys = _check_keys(Path(keys).resolve(), nodes) if keys is not None else None
    certs = _check_certs(Path(certs).resolve()) if certs is not None else None
    _check_port(port)
    run_dir = new_run_dir(Path(output or "results").resolve(), job.scenario.name, run_id)
    write_plan(job.plan.only([job.name]), run_dir)  # the ServerApp runs this plan: nothing is resolved again
    write_json(run_dir / DEPLOYMENT_DIR / LAUNCH_FILE, {"strategy": job.name, "nodes": nodes, "insecure": insecure,
                                                        "keys": str(keys) if keys else None,
                                                        "certs": str(certs) if certs else None})
    return Launch(job, path.resolve(), run_dir, nodes, insecure, port, keys, certs)


def _check_keys(keys: Path, nodes: int, option: str = "--keys") -> Path:
    for i in range(nodes):
        for f, check in zip(node_key_paths(keys, i), (check_private_key, check_public_key)):
            if not f.is_file():
                raise ConfigError(None, option, f"{f} not found; make {nodes} key pairs with "
                                                f"`clsim flower keys {keys} --nodes {nodes}`")
            try:
                check(f)
            except (ValueError, TypeError) as exc:
                raise ConfigError(None, option, f"{f}: not an OpenSSH EC key ({exc})") from None
    return keys


def _check_certs(certs: Path, option: str = "--certs") -> Path:
    for name in ("ca.crt", "server.pem", "server.key"):
        if not (certs / name).is_file():
            raise ConfigError(None, option, f"{certs / name} not found; make it with `clsim flower certs {certs}`")
    return certs


def _check_port(port: int | None) -> None:
    if port is not None and port_in_use(port):
        raise ConfigError(None, "--port", f"port {port} on 127.0.0.1 is in use; choose another or omit --port")


def prepare_resume(run_dir: str | Path, port: int | None = None) -> Launch:
    """Check that ``run_dir`` is an interrupted launch that can go on (ConfigError, one line, if not):
    its plan, how it was launched, its certificates and keys; no launcher still running it."""
    for exe in ("flower-superlink", "flower-supernode", "flwr"):
        flower_exe(exe)
    run_dir = Path(run_dir).resolve()
    plan = read_plan(run_dir, (FEDERATED,))
    fdir = run_dir / DEPLOYMENT_DIR
    try:
        how = json.loads((fdir / LAUNCH_FILE).read_text())
    except (OSError, ValueError):
        how = {}  # a run from `clsim run`, or launched before launch.json: its federated strategy, fresh keys
    try:
        job = federated_job(plan, how.get("strategy"))
    except ConfigError as exc:
        raise ConfigError(None, "--resume", exc.message) from None
    if finished_seeds(run_dir, job.name, [job.scenario.seed]):
        raise ConfigError(None, "--resume", f"strategy {job.name!r} of {run_dir} has finished; nothing to resume")
    running = recorded_launcher(fdir)
    if running is not None:
        raise ConfigError(None, "--resume", f"the launch of {run_dir} is still running (PID {running}); stop it "
                                            f"first (Ctrl-C there, or kill {running})")
    nodes, insecure = int(how.get("nodes", job.fed.clients)), bool(how.get("insecure", False))
    keys = certs = None
    if not insecure:
        keys = _check_keys(Path(how.get("keys") or fdir / "keys"), nodes, "--resume") \
            if how.get("keys") or (fdir / "keys").is_dir() else None
        certs = _check_certs(Path(how.get("certs") or fdir / "certs"), "--resume") \
            if how.get("certs") or (fdir / "certs").is_dir() else None
    _check_port(port)
    return Launch(job, plan.file, run_dir, nodes, insecure, port, keys, certs, resume=True)


def _set_aside(fdir: Path, say) -> None:
    """Before a resume: stop what a killed launcher left running; move the last attempt's logs
    into ``attempt<k>/``."""
    stopped = stop_recorded(fdir)
    if stopped:
        say(f"stopped {len(stopped)} process(es) the previous launch left running: "
            + ", ".join(f"{pid} ({cmd})" for pid, cmd in stopped))
    old = [f for f in fdir.iterdir() if f.suffix == ".log" or f.name in (PIDS_FILE, "run_config.toml")] \
        if fdir.is_dir() else []
    if old:
        k = 1 + sum(1 for d in fdir.glob("attempt*") if d.is_dir())
        (fdir / f"attempt{k}").mkdir()
        for f in old:
            f.rename(fdir / f"attempt{k}" / f.name)


def _reason(lines: list[str]) -> str | None:
    """Why a run stopped, from its streamed log: the ServerApp's ``clsim: stopped:`` line, else the
    last line naming an error."""
    text = [ANSI.sub("", ln) for ln in lines]
    for ln in reversed(text):
        if "clsim: stopped:" in ln:
            return ln.split("clsim: stopped:", 1)[1].split(" (results so far in ")[0].strip()
    for ln in reversed(text):
        found = re.search(r"\b(\w+(?:Error|Exception)): (.+)", ln)
        if found:
            return f"{found.group(1)}: {found.group(2).strip()}"
    return None


def execute(launch: Launch, echo: Echo | None = None,
            before_run: Callable[[Deployment], None] | None = None) -> LaunchResult:
    """Start the deployment, run the strategy, stop every process — on success, error or Ctrl-C.

    ``echo`` gets the launcher's steps and each line ``flwr run`` streams; ``before_run``
    (tests) sees the deployment once the SuperNodes have joined. A run that did not finish
    leaves its summary marked incomplete (what was written so far stays as written)."""
    say = echo or (lambda s: None)
    t0 = time.perf_counter()
    fdir = launch.flower_dir
    if launch.resume:
        _set_aside(fdir, say)
    certs, keys, run_config = _materials(launch)
    dep = Deployment(fdir, certs, auth=keys is not None, port=launch.port)
    status, lines, node_ids, error = "unknown", [], {}, None
    try:
        say(f"SuperLink on {dep.address}: " + ("plaintext, no SuperNode authentication (--insecure)" if keys is None
                                                else "TLS, only registered SuperNodes may join"))
        dep.start_superlink()
        names = [f"supernode{i}" for i in range(launch.nodes)]
        if keys is not None:
            dep.register([node_key_paths(keys, i)[1] for i in range(launch.nodes)])
            say(f"registered {launch.nodes} SuperNode public keys from {keys}")
        for i, name in enumerate(names):
            dep.start_supernode(name, i, launch.nodes, node_key_paths(keys, i)[0] if keys else None)
        joined = dep.wait_joined(names)
        node_ids = {i: joined[name] for i, name in enumerate(names)}
        say(f"{launch.nodes} SuperNodes connected; Flower logs in {fdir}")
        if before_run:
            before_run(dep)
        run_id, lines = dep.submit(APP_ROOT, run_config, echo)
        if run_id is None:
            error = _reason(lines) or f"`flwr run` did not start the run (see {fdir / 'flwr_run.log'})"
        else:
            status = dep.run_status(run_id)
            if status != "finished:completed":
                error = _reason(lines) or f"Flower reports the run {status}"
        if not dep.superlink_alive():
            error = f"the SuperLink exited with code {dep.procs['superlink'].returncode}: {log_tail(fdir / 'superlink.log')}"
    except BaseException as exc:  # DeployError, Ctrl-C: stop and record below, then re-raise
        error = " ".join(str(exc).split()) or ("interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__)
        raise
    finally:
        leftovers = dep.stop()
        complete = _record(launch, error)
    return LaunchResult(launch.run_dir, launch.job.name, status, complete, None if complete else error,
                        time.perf_counter() - t0, node_ids,
                        dict(dep.commands), leftovers)


def _materials(launch: Launch) -> tuple[Path | None, Path | None, Path]:
    """Certificates and node keys (fresh unless given; none with --insecure) and the run config."""
    fdir = launch.flower_dir
    fdir.mkdir(parents=True, exist_ok=True)
    certs = keys = None
    if not launch.insecure:
        certs, keys = launch.certs, launch.keys
        if certs is None:
            certs = fdir / "certs"
            make_certs(certs)["ca_key"].unlink()  # the server certificate is signed; nothing else may be
        if keys is None:
            keys = fdir / "keys"
            make_node_keys(keys, launch.nodes)
    run_config = fdir / "run_config.toml"
    run_config.write_text(tomli_w.dumps({"plan": str(launch.run_dir / PLAN_FILE), "strategy": launch.job.name,
                                         "resume": launch.resume}))
    return certs, keys, run_config


def _record(launch: Launch, error: str | None) -> bool:
    """Whether the strategy finished; if not, mark it incomplete in the run's summary."""
    seeds = [launch.job.scenario.seed]
    doc = partial_doc(launch.run_dir, launch.job.name, seeds)
    if doc.get("complete"):
        return True
    write_summary(launch.run_dir, [partial_doc(launch.run_dir, launch.job.name, seeds,
                                               error or "the run ended before its last experience")])
    return False
