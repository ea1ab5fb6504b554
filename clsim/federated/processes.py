"""Flower's deployment processes on loopback, started and stopped by PID.

``Deployment`` runs Flower's own commands, nothing home-made in between: ``flower-superlink``
(TLS, and ``--enable-supernode-auth`` when ``auth``), ``flower-supernode`` per partition (with
an auth key), ``flwr supernode register`` and ``flwr run --stream`` against a connection in a
private ``FLWR_HOME``. Each process gets a log in ``workdir`` and a ``FLWR_HOME`` of its own
(``workdir/home/<name>``), like a machine of its own, so the user's ``~/.flwr`` is untouched.

Every process starts in a session of its own (Ctrl-C reaches clsim only) and is stopped by
PID: its process group plus every descendant seen while it ran — the SuperLink starts
``flower-superexec`` in yet another session, which ``killpg`` alone would miss. Every PID is
also recorded, with its start time, in ``workdir/pids.json`` as it is seen: if the launcher
itself is killed (``kill -9``, the OOM killer) the processes it started outlive it, and the
next launch in that folder (a resume) stops exactly those (:mod:`clsim.federated.pids`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import tomli_w

from clsim.config import ConfigError
from clsim.federated.pids import record_pids

APP_ROOT = Path(__file__).resolve().parents[2]  # the project (or installed Flower App) folder `flwr run` ships
DEPLOYMENT_DIR = "flower"  # what `clsim flower launch` keeps in the run folder (certs, keys, logs)
CONNECTION = "clsim"  # the SuperLink connection's name in the private FLWR_HOME
READY_TIMEOUT_S = 90.0  # a SuperLink or SuperNode that is not up by then has failed
CLI_TIMEOUT_S = 120.0  # one `flwr supernode register` / `flwr ls` call
ANSI = re.compile(r"\x1b\[[0-9;]*m")
Echo = Callable[[str], None]


class DeployError(RuntimeError):
    """A Flower process did not start or was refused; the message names it and quotes its log."""


# --------------------------------------------------------------------------- helpers
def flower_exe(name: str) -> str:
    """A Flower command from this environment (it need not be on PATH)."""
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    if shutil.which(name):
        return str(shutil.which(name))
    raise ConfigError(None, name, "not found; install flwr into this environment")


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held open together while choosing)."""
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


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def log_tail(path: Path, lines: int = 6) -> str:
    """The last meaningful lines of a log, on one line (for an error message)."""
    try:
        text = ANSI.sub("", path.read_text(errors="replace"))
    except OSError:
        return "(no log)"
    keep = [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.lstrip().startswith(("INFO:", "For more information"))]
    return " | ".join(keep[-lines:]) or "(empty log)"


def _parse_json(text: str) -> dict:
    start = text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        return {}


def _command(proc: psutil.Process) -> str:
    """``flower-superexec``, ``flwr-clientapp``, ...: the Flower command a process runs (else its name)."""
    try:
        args = proc.cmdline()
    except psutil.Error:
        return "?"
    names = [Path(a).name for a in args[:2]]
    return next((n for n in names if n.startswith(("flower-", "flwr"))), names[0] if names else "?")


# --------------------------------------------------------------------------- processes
@dataclass
class Deployment:
    """A SuperLink, SuperNodes and ``flwr`` commands on loopback, all started and stopped here.

    ``certs``: a folder with ``ca.crt``, ``server.pem``, ``server.key`` (TLS), or ``None`` for
    plaintext; ``auth`` (TLS only): the SuperLink admits registered SuperNodes only."""

    workdir: Path
    certs: Path | None
    auth: bool = True
    port: int | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # descendants ever seen
    commands: dict[int, str] = field(default_factory=dict)  # PID -> command name, for every process above

    def __post_init__(self):
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.auth and self.certs is None:
            raise ValueError("SuperNode authentication needs TLS (Flower refuses it with --insecure)")
        self.port = self.port or free_ports(1)[0]
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def home(self, name: str) -> Path:
        path = self.workdir / "home" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self, home: str) -> dict[str, str]:
        """This environment (PYTHONPATH included), its bin first on PATH (the SuperLink and SuperNodes
        start ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name), a private
        FLWR_HOME, no telemetry, unbuffered output (``flwr run --stream`` prints to a log we follow)."""
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return {**os.environ, "PATH": path, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_HOME": str(self.home(home)),
                "PYTHONUNBUFFERED": "1"}

    # ------------------------------------------------------------ starting
    def _start(self, name: str, args: list[str], home: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        try:
            proc = subprocess.Popen(args, cwd=self.workdir, env=self.env(home), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # Ctrl-C reaches clsim only
        finally:
            log.close()
        self.procs[name] = proc
        self.commands[proc.pid] = Path(args[0]).name
        self._record()
        if self._watch is None:
            self._watch = threading.Thread(target=self._watch_loop, daemon=True)
            self._watch.start()
        return proc

    def start_superlink(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start the SuperLink and wait until it accepts connections; write the ``flwr`` connection."""
        c = self.certs
        tls = (["--ssl-ca-certfile", str(c / "ca.crt"), "--ssl-certfile", str(c / "server.pem"),
                "--ssl-keyfile", str(c / "server.key")] if c else ["--insecure"])
        proc = self._start("superlink", [flower_exe("flower-superlink"), *tls, *(["--enable-supernode-auth"] * self.auth),
                                         "--port", str(self.port), "--disable-runtime-dependency-installation"],
                           "superlink")
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise DeployError(f"the SuperLink exited with code {proc.returncode} at start "
                                  f"({self.workdir / 'superlink.log'}): {log_tail(self.workdir / 'superlink.log')}")
            with socket.socket() as s:
                s.settimeout(1.0)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise DeployError(f"the SuperLink did not open port {self.port} within {timeout:.0f} s "
                                  f"({self.workdir / 'superlink.log'})")
            time.sleep(0.2)
        entry = {"address": self.address, **({"root-certificates": str(c / "ca.crt")} if c else {"insecure": True})}
        (self.home("cli") / "config.toml").write_text(
            tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: entry}}))

    def flwr(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
        """A ``flwr`` CLI command against this SuperLink (connection ``clsim``)."""
        return subprocess.run([flower_exe("flwr"), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env("cli"), cwd=self.workdir, stdin=subprocess.DEVNULL)

    def register(self, public_keys: list[Path]) -> list[int]:
        """``flwr supernode register KEY clsim`` for each key (in parallel); return their node ids."""
        cmds = [[flower_exe("flwr"), "supernode", "register", str(k), CONNECTION, "--format", "json"]
                for k in public_keys]
        running = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.workdir,
                                    env=self.env("cli"), stdin=subprocess.DEVNULL) for c in cmds]
        ids = []
        try:
            for key, proc in zip(public_keys, running):
                try:
                    out, _ = proc.communicate(timeout=CLI_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    raise DeployError(f"`flwr supernode register {key}` did not finish within {CLI_TIMEOUT_S:.0f} s")
                reply = _parse_json(out)  # flwr exits 0 on refusal too; the JSON says
                if not reply.get("success"):
                    why = " ".join(str(reply.get("error-message") or ANSI.sub("", out)).split())
                    raise DeployError(f"the SuperLink refused SuperNode key {key}: {why[-300:]}")
                ids.append(int(reply["node-id"]))
        finally:
            for proc in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return ids

    def start_supernode(self, name: str, partition: int, partitions: int, private_key: Path | None = None,
                        port: int | None = None) -> subprocess.Popen:
        """A SuperNode serving ``partition`` of ``partitions`` (log ``<name>.log``, FLWR_HOME ``home/<name>``)."""
        tls = ["--root-certificates", str(self.certs / "ca.crt")] if self.certs else ["--insecure"]
        auth = ["--auth-supernode-private-key", str(private_key)] if private_key else []
        return self._start(name, [flower_exe("flower-supernode"), *tls, "--superlink", self.address,
                                  "--port", str(port or free_ports(1)[0]), *auth,
                                  "--node-config", f"partition-id={partition} num-partitions={partitions}"], name)

    def wait_joined(self, names: list[str], timeout: float = READY_TIMEOUT_S) -> dict[str, int]:
        """Wait until each named SuperNode is connected (it logs its node id); return the ids.
        A SuperNode that exits meanwhile (e.g. its key is not registered) raises DeployError."""
        ids: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        while len(ids) < len(names):
            for name in names:
                if name in ids:
                    continue
                log = self.workdir / f"{name}.log"
                found = re.search(r"SuperNode ID: (\d+)", log.read_text(errors="replace")) if log.exists() else None
                if found:
                    ids[name] = int(found.group(1))
                elif self.procs[name].poll() is not None:
                    raise DeployError(f"{name} exited with code {self.procs[name].returncode} before joining "
                                      f"({log}): {log_tail(log)}")
            if time.monotonic() > deadline and len(ids) < len(names):
                missing = [n for n in names if n not in ids]
                raise DeployError(f"{', '.join(missing)} did not connect within {timeout:.0f} s (see their logs "
                                  f"in {self.workdir})")
            time.sleep(0.3)
        return ids

    # ------------------------------------------------------------ the run
    def submit(self, app_dir: Path, run_config: Path, echo: Echo | None = None) -> tuple[int | None, list[str]]:
        """``flwr run APP clsim --stream --run-config FILE``: streams its output (to ``echo`` and
        ``flwr_run.log``) until the run ends; returns Flower's run id and the output lines."""
        proc = self._start("flwr_run", [flower_exe("flwr"), "run", str(app_dir), CONNECTION, "--stream",
                                        "--run-config", str(run_config)], "cli")
        log = self.workdir / "flwr_run.log"
        lines: list[str] = []
        partial, ended = b"", False
        with open(log, "rb") as f:  # follow the log the process writes (its stdout)
            while True:
                chunk = f.readline()
                if chunk:
                    partial += chunk
                    if not partial.endswith(b"\n") and not ended:
                        continue  # the rest of the line is still being written
                    text = partial.decode(errors="replace").rstrip("\n")
                    partial = b""
                    lines.append(text)
                    if echo:
                        echo(text)
                    continue
                if ended:  # exited, and everything it wrote has been read
                    if partial:
                        lines.append(partial.decode(errors="replace"))
                        if echo:
                            echo(lines[-1])
                    break
                ended = proc.poll() is not None
                if not ended:
                    time.sleep(0.2)
        found = next((re.search(r"Successfully started run (\d+)", ln) for ln in lines
                      if "Successfully started run" in ln), None)
        return (int(found.group(1)) if found else None), lines

    def run_status(self, run_id: int) -> str:
        """Flower's status of a run (``finished:completed``, ``finished:failed``, ...), or ``unknown``."""
        try:
            res = self.flwr("ls", "--run-id", str(run_id), CONNECTION, "--format", "json")
        except subprocess.TimeoutExpired:
            return "unknown"
        runs = _parse_json(res.stdout).get("runs") or []
        return str(runs[0].get("status", "unknown")) if runs else "unknown"

    def superlink_alive(self) -> bool:
        return "superlink" in self.procs and self.procs["superlink"].poll() is None

    # ------------------------------------------------------------ stopping
    def _snapshot(self) -> None:
        """Remember every descendant of every started process (by PID and start time)."""
        new = False
        with self._lock:
            for p in list(self.procs.values()):
                try:
                    for child in psutil.Process(p.pid).children(recursive=True):
                        if child.pid not in self.seen:
                            self.seen[child.pid] = child
                            self.commands[child.pid] = _command(child)
                            new = True
                except psutil.Error:
                    pass
        if new:
            self._record()

    def _record(self) -> None:
        record_pids(self.workdir, dict(self.commands), dict(self.seen))

    def _watch_loop(self) -> None:
        while not self._stopping.wait(1.0):
            self._snapshot()
            run = self.procs.get("flwr_run")
            if run is not None and run.poll() is None and "superlink" in self.procs and not self.superlink_alive():
                run.terminate()  # the SuperLink is gone: `flwr run` would wait for nothing

    def leftovers(self) -> list[int]:
        """PIDs started here, or descended from them, that are still running (zombies excluded)."""
        alive = [p.pid for p in self.procs.values() if p.poll() is None]
        for proc in list(self.seen.values()):
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc.pid)
            except psutil.Error:
                pass
        return sorted(set(alive))

    def stop(self, timeout: float = 20.0) -> list[int]:
        """SIGTERM every started process group and every descendant seen, wait up to ``timeout`` s,
        then SIGKILL what is left. Returns the PIDs still running afterwards (none, normally)."""
        self._snapshot()
        self._stopping.set()
        order = ["flwr_run", *sorted(n for n in self.procs if n not in ("flwr_run", "superlink")), "superlink"]
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            for name in order:
                p = self.procs.get(name)
                if p is None:
                    continue
                try:
                    os.killpg(p.pid, sig)  # its group: the process and the helpers that stayed in it
                except (ProcessLookupError, PermissionError):
                    pass
            for proc in list(self.seen.values()):  # helpers in sessions of their own
                try:
                    if proc.is_running():
                        proc.send_signal(sig)
                except psutil.Error:
                    pass
            deadline = time.monotonic() + wait
            for p in self.procs.values():
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            while self.leftovers() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.leftovers():
                break
        return self.leftovers()

