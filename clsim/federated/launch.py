"""Running a federated strategy: Flower's simulation on Ray, or real local processes.

``run_simulation_job`` is what ``clsim run`` uses: ``flwr.simulation.run_simulation`` with the
ServerApp of :mod:`clsim.federated.server_app` and the ClientApp of
:mod:`clsim.federated.client_app`, one virtual SuperNode per client, client resources from the
preset. Flower's Ray backend reuses the Ray clsim initialised — and shuts it down when the
simulation ends, so the runner starts federated runs after its actors are done and
re-initialises Ray between them.

``LocalFederation`` starts the stock processes — ``flower-superlink`` and one
``flower-supernode`` per client — on loopback (TLS or an explicit ``--insecure``), writes the
SuperLink connection for ``flwr run``, and stops every process it started by PID.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomli
import tomli_w
from flwr.simulation import run_simulation

from clsim.federated import quiet_flower
from clsim.federated.client_app import app as client_app
from clsim.federated.job import Job
from clsim.federated.server_app import server_app_for


def run_simulation_job(job: Job, run_dir: str | Path, tokens, device: str = "cpu", progress=None,
                       ray_address: str | None = None, verbose: bool = False, resume: bool = False) -> dict:
    """Simulate ``job`` with Flower's simulation engine; return the metrics document.

    Resumable: the server checkpoints after every round and clients keep their CL state in
    ``<run_dir>/<strategy>/clients/``; ``resume`` continues from there. If Ray is not
    initialised, Flower initialises it (joining ``ray_address`` when given)."""
    fed = job.fed
    gpus = fed.client_resources.gpus(fed.clients, device == "cuda")
    backend = {"client_resources": {"num_cpus": fed.client_resources.num_cpus, "num_gpus": gpus},
               "init_args": {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                             "configure_logging": False, **({"address": ray_address} if ray_address else {})}}
    result: dict = {}
    job = replace(job, state_dir=str(Path(run_dir).resolve() / job.name / "clients"))
    server = server_app_for(job, run_dir, tokens, device, progress, result, resume)
    with quiet_flower(None if verbose else logging.WARNING):  # failures (WARNING) still show
        run_simulation(server_app=server, client_app=client_app, num_supernodes=fed.clients,
                       backend_config=backend)
    if "doc" not in result:
        raise RuntimeError(f"federated strategy {job.name!r} ended without results (see the Flower log above)")
    return result["doc"]


# --------------------------------------------------------------------------- real processes
def flower_config_path() -> Path:
    """Flower's CLI config (SuperLink connections): ``$FLWR_HOME/config.toml``, default ``~/.flwr``."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr") / "config.toml"


def write_connection(name: str, address: str, root_certificates: Path | None, default: bool = False) -> Path:
    """Add (or replace) ``[superlink.<name>]`` in Flower's config; ``None`` certificates: insecure."""
    path = flower_config_path()
    data = tomli.loads(path.read_text()) if path.is_file() else {}
    links = data.setdefault("superlink", {})
    entry = {"address": address}
    entry.update({"root-certificates": str(Path(root_certificates).resolve())} if root_certificates
                 else {"insecure": True})
    links[name] = entry
    if default or "default" not in links:
        links["default"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data))
    return path

def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (all held open while choosing, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _exe(name: str) -> str:
    """A Flower command from this environment (it need not be on PATH)."""
    found = Path(sys.executable).parent / name
    if not found.exists():
        found = Path(shutil.which(name) or name)
    if not found.exists():
        raise FileNotFoundError(f"{name} not found; install flwr into this environment")
    return str(found)


def flower_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Flower processes: this environment's bin first on PATH (the SuperLink and
    SuperNodes start ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "FLWR_TELEMETRY_ENABLED": "0", **(extra or {})}


@dataclass
class LocalFederation:
    """A SuperLink and ``clients`` SuperNodes on loopback; ``certs`` (from ``clsim flower certs``)
    turns on TLS, ``certs=None`` runs them with an explicit ``--insecure``."""

    clients: int
    workdir: Path
    certs: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self):
        self.port, *self.node_ports = free_ports(1 + self.clients)  # SuperLink, then each SuperNode's own API

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _tls(self, server: bool) -> list[str]:
        if self.certs is None:
            return ["--insecure"]
        c = Path(self.certs)
        if server:
            return ["--ssl-ca-certfile", str(c / "ca.crt"), "--ssl-certfile", str(c / "server.pem"),
                    "--ssl-keyfile", str(c / "server.key")]
        return ["--root-certificates", str(c / "ca.crt")]

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(args, cwd=self.workdir, env=flower_env(self.env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: its helpers stop with it
        log.close()
        self.procs.append(proc)
        return proc

    def start(self) -> "LocalFederation":
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start("superlink", [_exe("flower-superlink"), *self._tls(True), "--port", str(self.port),
                                  "--disable-runtime-dependency-installation"])
        for i in range(self.clients):
            self._start(f"supernode{i}", [_exe("flower-supernode"), *self._tls(False), "--superlink", self.address,
                                          "--port", str(self.node_ports[i]),
                                          "--node-config", f"partition-id={i} num-partitions={self.clients}"])
        return self

    def connection_toml(self, name: str) -> str:
        """The ``[superlink.<name>]`` section ``flwr run . <name>`` reads from ``$FLWR_HOME/config.toml``."""
        lines = [f"[superlink.{name}]", f'address = "{self.address}"']
        lines.append(f'root-certificates = "{Path(self.certs) / "ca.crt"}"' if self.certs else "insecure = true")
        return "\n".join(lines) + "\n"

    def run_app(self, app_dir: str | Path, connection: str, run_config: str,
                timeout: float) -> subprocess.CompletedProcess:
        """``flwr run APP_DIR CONNECTION --stream --run-config ...``: blocks until the run ends."""
        return subprocess.run([_exe("flwr"), "run", str(app_dir), connection, "--stream", "--run-config", run_config],
                              capture_output=True, text=True, timeout=timeout, env=flower_env(self.env))

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM each started process (and its process group: the helpers it spawned), wait up
        to ``timeout`` s, then SIGKILL whatever is left in those groups."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in self.procs:
                try:
                    os.killpg(p.pid, sig)  # group id == the PID of the process we started
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
            for p in self.procs:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            while self.groups_alive() and time.monotonic() < deadline:  # helpers exit after their parent
                time.sleep(0.2)
            if not self.groups_alive():
                break

    def groups_alive(self) -> list[int]:
        """Started processes whose process group still has a member (the process or a helper it spawned)."""
        alive = []
        for p in self.procs:
            try:
                os.killpg(p.pid, 0)
                alive.append(p.pid)
            except ProcessLookupError:
                pass
            except PermissionError:
                alive.append(p.pid)
        return alive

    def __enter__(self) -> "LocalFederation":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
