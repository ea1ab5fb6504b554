"""``clsim flower launch`` / ``clsim flower keys``: a federated strategy on real Flower processes.

Fast tests: the key files are what Flower's own loaders accept; ``keys`` prints every machine's
command; bad input (too few nodes, unknown strategy, a missing key file, a port in use, keys
without TLS) exits 2 with one line before any process starts or any folder is made.

Slow tests (``-m slow``) start a real SuperLink with TLS and SuperNode authentication, real
SuperNodes and ``flwr run`` on the smoke federation, then assert that every process started —
and every descendant seen, such as the SuperLink's ``flower-superexec`` in its own session —
has stopped (each real deployment costs minutes, so one deployment carries several checks):

- a SuperNode SIGKILLed after round 1: the run never hangs, and what it wrote stays consistent;
- three deployments shared by two tests (the module fixture ``killed_and_resumed``): a launch
  SIGKILLed mid-run and resumed equals an uninterrupted run of the README's manual path (stock
  SuperLink + SuperNodes over TLS, ``flwr run`` with a run config naming the scenario file); and
  the resumed launch, through the CLI with auth on, carries the CLI end-to-end checks (the
  results layout of ``clsim run``, the CA key gone, the user's FLWR_HOME untouched), during which
  an unregistered SuperNode claiming a partition is refused and never runs a ClientApp, while
  the registered ones train both partitions.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from clsim.cli import app as cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "scenarios" / "smoke_fed.yaml"
RUN_TIMEOUT_S = 600


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def flower_processes_under(path: Path) -> list[int]:
    """Running processes whose command line mentions ``path`` (nothing should, after a refusal)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(str(path) in a for a in (p.info["cmdline"] or [])):
            found.append(p.info["pid"])
    return found


def still_running(started: dict[int, str]) -> list[tuple[int, str]]:
    """Those of ``started`` (PID -> command) still running (a zombie awaiting its reaper is not)."""
    alive = []
    for pid, name in started.items():
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append((pid, name))
        except psutil.NoSuchProcess:
            pass
    return alive


def assert_stopped(started: dict[int, str]) -> None:
    """Every PID the launch started or saw descend from it is gone (or a zombie awaiting its reaper)."""
    alive = still_running(started)
    assert not alive, f"still running after the launch: {alive}"


# --------------------------------------------------------------------------- keys
def test_node_keys_are_what_flower_loads(tmp_path):
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key

    from clsim.federated.keys import make_node_keys

    pairs = make_node_keys(tmp_path, 2)
    for private, public in pairs:
        assert try_load_public_key(public)  # what `flwr supernode register` does with the file
        key = load_ssh_private_key(private.read_bytes(), None)  # what flower-supernode does
        assert key.curve.name == "secp384r1"
        assert private.stat().st_mode & 0o077 == 0, "a private key must be readable by its owner only"
    assert pairs[0][1].read_text() != pairs[1][1].read_text()


def test_keys_command_prints_every_machines_command(tmp_path):
    res = invoke("flower", "keys", tmp_path / "keys", "--nodes", 2, "--superlink", "10.0.0.5:8000",
                 "--certs", tmp_path / "certs")
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert (tmp_path / "keys" / "node1").is_file() and (tmp_path / "keys" / "node1.pub").is_file()
    assert f"clsim flower certs {tmp_path / 'certs'} --name 10.0.0.5" in out  # certs do not exist yet
    assert "--enable-supernode-auth --host 0.0.0.0 --port 8000" in out
    for i in range(2):
        assert f"flwr supernode register {tmp_path / 'keys' / f'node{i}.pub'} clsim" in out
        assert (f"--auth-supernode-private-key {tmp_path / 'keys' / f'node{i}'} "
                f'--node-config "partition-id={i} num-partitions=2 state-dir=\'~/clsim-state\'"') in out
    assert "--superlink 10.0.0.5:8000" in out and "flwr run . clsim --stream" in out
    assert "--run-config \"resume='results/<scenario>/<run id>'\"" in out
    before = (tmp_path / "keys" / "node0.pub").read_text()
    line = error_line(invoke("flower", "keys", tmp_path / "keys", "--nodes", 2))  # registered keys stay valid
    assert "node0 exists" in line and (tmp_path / "keys" / "node0.pub").read_text() == before


# --------------------------------------------------------------------------- bad input
def _refused(tmp_path, *args: str) -> str:
    line = error_line(invoke("flower", "launch", SMOKE, "--output", tmp_path / "out", *args))
    assert not (tmp_path / "out").exists(), "a refused launch made a run folder"
    assert flower_processes_under(tmp_path) == [], "a refused launch started a process"
    return line


def test_launch_refuses_fewer_nodes_than_clients(tmp_path):
    line = _refused(tmp_path, "--strategy", "fedavg", "--nodes", "1")
    assert "--nodes" in line and "1 SuperNode(s) for the 2 clients" in line


def test_launch_refuses_more_nodes_than_clients(tmp_path):
    line = _refused(tmp_path, "--strategy", "fedavg", "--nodes", "3")
    assert "--nodes" in line and "3 SuperNodes for the 2 clients" in line


def test_launch_refuses_an_unknown_server_strategy_parameter(tmp_path):
    sc = yaml.safe_load(SMOKE.read_text())
    sc["strategies"] = [{**sc["strategies"][1], "server_params": {"fraction_fit": 0.5}}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(sc))
    line = error_line(invoke("flower", "launch", bad, "--strategy", "fedavg", "--output", tmp_path / "out"))
    assert "server_params.fraction_fit: unknown parameter for FedAvg" in line
    assert not (tmp_path / "out").exists() and flower_processes_under(tmp_path) == []


def test_launch_refuses_an_unknown_strategy(tmp_path):
    line = _refused(tmp_path, "--strategy", "fedsgd")
    assert "--strategy" in line and "'fedsgd'" in line and "fedavg" in line
    line = _refused(tmp_path, "--strategy", "naive")  # central, not federated
    assert "'naive' is not a federated strategy" in line


def test_launch_refuses_a_missing_key_file(tmp_path):
    from clsim.federated.keys import make_node_keys

    make_node_keys(tmp_path / "keys", 2)
    (tmp_path / "keys" / "node1").unlink()
    line = _refused(tmp_path, "--strategy", "fedavg", "--keys", tmp_path / "keys")
    assert "--keys" in line and f"{tmp_path / 'keys' / 'node1'} not found" in line
    (tmp_path / "keys" / "node1").write_text("not a key")
    line = _refused(tmp_path, "--strategy", "fedavg", "--keys", tmp_path / "keys")
    assert "not an OpenSSH EC key" in line


def test_launch_refuses_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _refused(tmp_path, "--strategy", "fedavg", "--port", str(port))
    assert "--port" in line and f"port {port}" in line and "in use" in line


def test_launch_refuses_keys_without_tls(tmp_path):
    line = _refused(tmp_path, "--strategy", "fedavg", "--insecure", "--keys", tmp_path)
    assert "only over TLS" in line


# --------------------------------------------------------------------------- real processes
@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_supernode_killed_after_round_one_never_hangs(tmp_path):
    """Flower marks a SuperNode offline when it misses heartbeats (2 x 30 s); messages to it then
    come back as errors. The round in flight counts the failure and aggregates the other client;
    the next round finds one node, waits node_timeout and stops naming the missing partition."""
    from clsim.federated.deploy import execute, prepare_launch

    sc = yaml.safe_load(SMOKE.read_text())
    sc["stream"]["experiences"].append("travel")  # 3 rounds: the one in flight, then one without the node
    sc["strategies"] = [{**sc["strategies"][1], "node_timeout": 10}]
    scenario = tmp_path / "kill.yaml"
    scenario.write_text(yaml.safe_dump(sc))
    launch = prepare_launch(scenario, "fedavg", output=tmp_path / "out", run_id="kill")

    state = {}

    def keep(dep):
        state["dep"] = dep

    def echo(line: str):
        if "[ROUND " in line:  # Flower logs each round it starts (clsim starts one experience's rounds at a time)
            state["rounds"] = state.get("rounds", 0) + 1
        if state.get("rounds") == 2 and "killed_at" not in state:
            os.kill(state["dep"].procs["supernode1"].pid, signal.SIGKILL)
            state["killed_at"] = time.monotonic()

    result = execute(launch, echo=echo, before_run=keep)
    after_kill = time.monotonic() - state["killed_at"]
    assert_stopped(result.started)
    assert result.leftovers == []
    # heartbeat patience (60 s) + node_timeout (10 s) + process start/stop, never round_timeout (1 h)
    assert after_kill < 240, after_kill

    doc = json.loads((launch.run_dir / "fedavg" / "seed_0" / "metrics.json").read_text())
    rounds = doc["round_log"]
    assert len(doc["accuracy_matrix"]) == len(rounds) and len(rounds) >= 1  # 1 round per experience
    assert rounds[0]["clients_trained"] == [0, 1] and rounds[0]["failures"] == []
    failed = [f["client"] for r in rounds[1:] for f in r["failures"]]
    summary = (launch.run_dir / "summary.md").read_text()
    if result.complete:  # finished on the remaining node, the failure counted
        assert failed and set(failed) == {1} and doc["failures"] == len(failed)
        assert all(r["clients_trained"] == [0] for r in rounds[1:])
    else:  # stopped, naming the missing partition; what was written stays as written
        assert "client(s) [1]" in result.error, result.error
        assert not doc["complete"] and len(rounds) < 3
        assert "Incomplete" in summary and "fedavg" in summary
        assert set(failed) <= {1}
    print(f"after the kill: {after_kill:.0f} s; complete={result.complete}; error={result.error}; "
          f"failures by round: {[[f['client'] for f in r['failures']] for r in rounds]}")


# --------------------------------------------------------------------------- resume: bad input, leftovers
def _launched_run(tmp_path, complete: bool = False) -> Path:
    """A run folder as `clsim flower launch` leaves it before any process starts (plan, launch.json)."""
    from clsim.federated.deploy import prepare_launch

    launch = prepare_launch(SMOKE, "fedavg", output=tmp_path / "out", run_id="r")
    if complete:
        (launch.run_dir / "fedavg" / "seed_0").mkdir(parents=True)
        (launch.run_dir / "fedavg" / "seed_0" / "metrics.json").write_text(json.dumps({"strategy": "fedavg", "complete": True}))
    return launch.run_dir


def test_resume_refuses_settings_of_its_own_and_runs_that_cannot_go_on(tmp_path):
    run = _launched_run(tmp_path)
    line = error_line(invoke("flower", "launch", SMOKE, "--resume", run))
    assert "--resume" in line and "drop SCENARIO.yaml" in line
    line = error_line(invoke("flower", "launch", "--resume", run, "--nodes", "2", "--insecure"))
    assert "drop --nodes, --insecure" in line
    line = error_line(invoke("flower", "launch", "--resume", tmp_path / "nowhere"))
    assert "--resume" in line and "no run folder" in line
    line = error_line(invoke("flower", "launch"))
    assert "SCENARIO.yaml" in line and "--resume RUN_DIR" in line
    done = _launched_run(tmp_path / "done", complete=True)
    line = error_line(invoke("flower", "launch", "--resume", done))
    assert "has finished; nothing to resume" in line


def test_resume_refuses_while_the_first_launcher_still_runs(tmp_path):
    import subprocess
    import sys

    run = _launched_run(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(other.pid).create_time()
        (run / "flower" / "pids.json").write_text(json.dumps(
            {"launcher": {"pid": other.pid, "started": started}, "processes": []}))
        line = error_line(invoke("flower", "launch", "--resume", run))
        assert f"still running (PID {other.pid})" in line
    finally:
        other.kill()
        other.wait()


def test_a_killed_launchers_processes_are_stopped_by_pid_and_start_time(tmp_path):
    """What a launcher killed with SIGKILL leaves behind (recorded in pids.json) is stopped before
    a resume; a PID whose start time differs (reused by the system since) is left alone."""
    import subprocess
    import sys

    from clsim.federated.pids import recorded_launcher, stop_recorded

    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        record = {"launcher": {"pid": 999999, "started": 0.0},  # the killed launcher: gone
                  "processes": [{"pid": orphan.pid, "command": "flower-superlink",
                                 "started": psutil.Process(orphan.pid).create_time()},
                                {"pid": bystander.pid, "command": "flower-supernode", "started": 12345.0}]}
        (tmp_path / "pids.json").write_text(json.dumps(record))
        assert recorded_launcher(tmp_path) is None
        assert stop_recorded(tmp_path, timeout=10) == [(orphan.pid, "flower-superlink")]
        assert orphan.wait(10) is not None
        assert bystander.poll() is None, "a process that merely has a recorded PID was stopped"
    finally:
        for p in (orphan, bystander):
            p.kill()
            p.wait()


def _without_timings(doc: dict) -> dict:
    d = json.loads(json.dumps(doc))
    for k in ("train_seconds", "eval_seconds", "wall_seconds"):
        d["costs"].pop(k, None)
    for entry in d["round_log"]:
        for k in ("train_seconds", "train_wall_seconds", "slowest_client_train_seconds", "client_setup_seconds"):
            entry.pop(k, None)
    d.pop("resumes")
    return d


def _kill_everything(run: Path, launcher: "subprocess.Popen") -> list[int]:  # noqa: F821
    """SIGKILL the launcher and every process it recorded or that descends from them, at once."""
    record = json.loads((run / "flower" / "pids.json").read_text())
    procs = []
    for pid in [launcher.pid] + [e["pid"] for e in record["processes"]]:
        try:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    launcher.wait(30)
    psutil.wait_procs(procs, timeout=30)
    return sorted({p.pid for p in procs})


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Three real deployments of FedAvg + replay on 2 SuperNodes, 2 experiences x 2 rounds, shared by
    the two tests below (each deployment costs minutes):

    - the uninterrupted reference, by the README's manual path: stock SuperLink and SuperNodes over
      TLS (no SuperNode auth) and `flwr run` with a run config naming the scenario file, writing
      the results folder of `clsim run`;
    - `clsim flower launch` (auth on) in a fresh Python, SIGKILLed — the launcher and every Flower
      process — once a round checkpoint exists;
    - `clsim flower launch --resume` through the CLI, which finishes it. Before its `flwr run`, a
      SuperNode with a key nobody registered claims partition 1 (served by a registered node).

    FLWR_HOME points at a folder that must never appear (no launch may touch the user's Flower
    config). Records what each step saw; the tests assert."""
    import subprocess
    import sys

    import tomli_w
    import torch

    import clsim.federated.deploy as deploy
    from clsim.federated.certs import make_certs
    from clsim.federated.keys import make_node_keys
    from clsim.federated.processes import APP_ROOT, Deployment

    tmp_path = tmp_path_factory.mktemp("resume")
    got: dict = {"flwr_home": tmp_path / "user_flwr_home"}
    sc = yaml.safe_load(SMOKE.read_text())
    sc["strategies"] = [{**sc["strategies"][1], "preset": "fedavg_replay", "rounds_per_experience": 2}]
    scenario = tmp_path / "resume.yaml"
    scenario.write_text(yaml.safe_dump(sc))

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLWR_HOME", str(got["flwr_home"]))  # inherited by the launcher below, too

        certs = tmp_path / "certs"
        make_certs(certs)
        dep = Deployment(tmp_path / "procs", certs, auth=False)
        run_config = tmp_path / "run_config.toml"
        run_config.write_text(tomli_w.dumps({"scenario": str(scenario), "strategy": "fedavg_replay",
                                             "output": str(tmp_path / "ref"), "run-id": "r"}))
        try:
            dep.start_superlink()
            for i in range(2):
                dep.start_supernode(f"supernode{i}", i, 2)
            dep.wait_joined(["supernode0", "supernode1"])
            run_id, lines = dep.submit(APP_ROOT, run_config)
            assert run_id is not None, "\n".join(lines[-40:])
            got["ref_status"], got["ref_lines"] = dep.run_status(run_id), lines
        finally:
            got["ref_leftovers"] = dep.stop()
        got["ref_dir"] = tmp_path / "ref" / "smoke_fed" / "r"

        run = got["run"] = tmp_path / "out" / "smoke_fed" / "k"
        launcher = subprocess.Popen([sys.executable, "-m", "clsim.cli", "flower", "launch", str(scenario), "--strategy",
                                     "fedavg_replay", "--output", str(tmp_path / "out"), "--run-id", "k"],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        checkpoint = run / "fedavg_replay" / "seed_0" / "checkpoint.pt"
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            assert launcher.poll() is None, "the launch ended before a round checkpoint"
            assert time.monotonic() < deadline, "no round checkpoint in time"
            try:
                done = torch.load(checkpoint, weights_only=True)["trainer"]["round"] if checkpoint.exists() else 0
            except Exception:  # replaced while read: look again
                done = 0
            if done >= 1:
                break
            time.sleep(0.5)
        got["killed"] = _kill_everything(run, launcher)
        got["killed_alive"] = still_running({pid: "killed" for pid in got["killed"]})  # now: PIDs get reused
        partial = run / "fedavg_replay" / "seed_0" / "metrics.json"
        got["partial"] = json.loads(partial.read_text()) if partial.exists() else None

        (intruder_key, _), = make_node_keys(tmp_path / "intruder_keys", 1)  # never registered
        seen = got["intruder"] = {}

        def add_intruder(dep):
            proc = dep.start_supernode("intruder", 1, 2, intruder_key)
            try:
                proc.wait(60)  # refused at activation: it exits on its own
            except Exception:
                pass
            seen["exit"] = proc.poll()
            listed = dep.flwr("supernode", "list", "clsim", "--format", "json")
            seen["nodes"] = {int(n["node-id"]): n["status"] for n in json.loads(listed.stdout)["nodes"]}

        results = got["results"] = []
        real_execute = deploy.execute
        mp.setattr(deploy, "execute", lambda *a, **k: results.append(
            real_execute(*a, **{**k, "before_run": add_intruder})) or results[-1])
        got["res"] = invoke("flower", "launch", "--resume", run)
    return got


@pytest.mark.slow
@pytest.mark.timeout(3 * RUN_TIMEOUT_S)
def test_a_killed_deployment_resumed_equals_an_uninterrupted_one(killed_and_resumed):
    """The reference (README's manual path) is complete; the launch SIGKILLed once a round checkpoint
    existed, resumed with `clsim flower launch --resume`, gives the same metrics.json, timings
    aside; every process of every deployment gone."""
    import numpy as np

    got = killed_and_resumed
    assert got["ref_status"] == "finished:completed", "\n".join(got["ref_lines"][-40:])
    assert got["ref_leftovers"] == [], "a started process (or one it spawned) outlived stop()"
    ref_dir = got["ref_dir"]
    want = json.loads((ref_dir / "fedavg_replay" / "seed_0" / "metrics.json").read_text())
    R = np.asarray(want["accuracy_matrix"], dtype=float)
    assert want["complete"] and R.shape == (2, 2) and np.all((R >= 0) & (R <= 1))
    assert want["rounds"] == 4 and want["failures"] == 0 and min(want["bytes_up"]) > 0
    assert [c["partition-id"] for c in want["clients_info"]] == [0, 1]
    assert (ref_dir / "plan.json").is_file() and "fedavg_replay" in (ref_dir / "summary.csv").read_text()
    assert any(f.name.startswith("events.out.tfevents") for f in (ref_dir / "fedavg_replay" / "seed_0").iterdir())

    assert got["killed_alive"] == [], "SIGKILLed, yet still running"
    assert got["partial"] is None or not got["partial"]["complete"]

    res, run = got["res"], got["run"]
    assert res.exit_code == 0, res.output[-4000:]
    (resumed,) = got["results"]
    assert_stopped(resumed.started)
    assert resumed.leftovers == []
    doc = json.loads((run / "fedavg_replay" / "seed_0" / "metrics.json").read_text())
    assert doc["complete"] and doc["rounds"] == 4
    (entry,) = doc["resumes"]
    assert entry["reason"] == "resume" and entry["from_round"] >= 2, entry
    assert _without_timings(doc) == _without_timings(want)
    assert (run / "flower" / "attempt1" / "flwr_run.log").is_file()  # the killed attempt's logs, kept
    assert "Incomplete" not in (run / "summary.md").read_text()
    print(f"killed after round {entry['from_round'] - 1}: {len(got['killed'])} processes; "
          f"resumed in {resumed.seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(3 * RUN_TIMEOUT_S)
def test_launch_runs_the_smoke_federation_with_supernode_auth_and_refuses_an_unregistered_node(killed_and_resumed):
    """`clsim flower launch` end to end through the CLI, auth on (the resumed launch above): every
    process it started stopped, the results layout of `clsim run`, the CA key gone, one log per
    process, the user's FLWR_HOME untouched. The intruder is refused at activation, never runs a
    ClientApp, and the registered nodes train both partitions in every round."""
    got = killed_and_resumed
    res, run, seen = got["res"], got["run"], got["intruder"]
    assert res.exit_code == 0, res.output[-4000:]
    (result,) = got["results"]
    assert_stopped(result.started)
    assert result.leftovers == []
    started = set(result.started.values())
    assert {"flower-superlink", "flower-supernode", "flwr", "flower-superexec", "flwr-serverapp"} <= started, started

    doc = json.loads((run / "fedavg_replay" / "seed_0" / "metrics.json").read_text())
    assert doc["complete"] and doc["rounds"] == 4 and doc["failures"] == 0
    assert [c["partition-id"] for c in doc["clients_info"]] == [0, 1]
    assert [r["clients_trained"] for r in doc["round_log"]] == [[0, 1]] * 4
    assert (run / "scenario.yaml").is_file() and "fedavg_replay" in (run / "summary.csv").read_text()
    assert "Incomplete" not in (run / "summary.md").read_text()
    flower = run / "flower"
    assert sorted(p.name for p in flower.glob("*.log")) == ["flwr_run.log", "intruder.log", "superlink.log",
                                                            "supernode0.log", "supernode1.log"]
    assert (flower / "certs" / "ca.crt").is_file() and not (flower / "certs" / "ca.key").exists()
    link = (flower / "superlink.log").read_text()
    assert "SuperNode authentication is disabled" not in link and "Activated node_id" in link
    assert sorted(result.node_ids) == [0, 1] and len(set(result.node_ids.values())) == 2
    assert not got["flwr_home"].exists(), "a launch wrote into the user's FLWR_HOME"
    assert f"results:     {run}/summary.md" in res.output

    # the intruder: refused, and it said so; only the two registered keys exist; it never trained
    intruder_log = (flower / "intruder.log").read_text()
    assert seen["exit"] not in (None, 0), intruder_log
    assert "Failed to activate SuperNode" in intruder_log
    assert "SuperNode ID" not in intruder_log and "flwr-clientapp" not in intruder_log
    assert "No SuperNode found with the given public key" in link
    assert set(seen["nodes"]) == set(result.node_ids.values())
    assert set(seen["nodes"].values()) == {"online"}
    assert list(result.started.values()).count("flwr-clientapp") >= 1  # the registered nodes ran ClientApps
