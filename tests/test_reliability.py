"""Reliable runs: determinism, checkpoints, resume after a crash, Ray actor restarts, atomic writes.

The model is Avalanche's own checkpointing test: run, run interrupted, resume, compare. Every
comparison is of whole metrics.json documents (accuracy matrix, zero-shot row, per-experience
losses and sample counts) with only wall-clock timings left out.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import plan_of, resolve, scenario_dict

CORE = ["naive", "cumulative", "replay", "ewc", "lwf", "periodic_refinetune"]


class Crash(Exception):
    """Stands in for a process dying at a chosen point of a run."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Ray actors here get one CPU, so one torch thread: the in-process runs match them bit for bit."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _plain(x):
    """NaN -> None, as metrics.json stores it (NaN != NaN would make equal documents differ)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return None if isinstance(x, float) and x != x else x


def comparable(doc: dict) -> dict:
    """A metrics.json document without wall-clock timings and without the resume log."""
    d = _plain(copy.deepcopy(doc))
    d.pop("resumes", None)
    d.pop("restarts", None)
    costs = d["costs"]
    for k in ("train_seconds", "eval_seconds"):
        costs.pop(k)
    costs["per_experience"].pop("train_seconds")
    return d


def crash_at(phase: str, experience: int, after_batches: int = 0):
    """A progress callback that raises once the run reaches (phase, experience)."""

    def progress(run, ph, i, done, total):
        if ph == phase and i == experience and done >= after_batches:
            raise Crash(f"{run} at {phase} {experience}")

    return progress


@pytest.fixture(scope="module")
def setup(make_scenario, tokens_for):
    scenario = make_scenario(strategies=CORE)
    specs = {s.name: s for s in plan_of(scenario).strategies}
    return scenario, specs, tokens_for(scenario)


def run_strategy(scenario, spec, tokens, out, **kw):
    """A central strategy run of ``scenario`` (its plan resolved here) in this process."""
    from clsim.lifecycle import run_strategy as run

    return run(plan_of(scenario), spec, tokens, out, **kw)


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """Uninterrupted runs of every core strategy (computed once, on demand)."""

    scenario, specs, tokens = setup
    out = tmp_path_factory.mktemp("reference")
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = run_strategy(scenario, specs[name], tokens, str(out))
        return cache[name]

    return get


# --------------------------------------------------------------------------- determinism
def test_same_scenario_and_seed_give_identical_metrics(setup, reference, tmp_path):

    scenario, specs, tokens = setup
    again = run_strategy(scenario, specs["replay"], tokens, str(tmp_path / "a"))
    assert comparable(again) == comparable(reference("replay"))
    on_disk = json.loads((tmp_path / "a" / "replay" / "seed_0" / "metrics.json").read_text())
    assert comparable(on_disk) == comparable(again)
    # the comparison can fail: another seed gives other weights and other numbers
    other = run_strategy(scenario.model_copy(update={"seed": 1}), specs["replay"], tokens, str(tmp_path / "b"))
    assert comparable(other)["costs"]["per_experience"]["loss"] != comparable(again)["costs"]["per_experience"]["loss"]


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("name", CORE)
def test_resume_after_experience_matches_uninterrupted_run(name, setup, reference, tmp_path):
    """Killed right after experience 1 is checkpointed, resumed: the same final metrics."""
    from clsim import checkpoint

    scenario, specs, tokens = setup
    with pytest.raises(Crash):
        run_strategy(scenario, specs[name], tokens, str(tmp_path), progress=crash_at("done_exp", 1))
    partial = json.loads((tmp_path / name / "seed_0" / "metrics.json").read_text())
    assert partial["complete"] is False and len(partial["accuracy_matrix"]) == 2
    assert len(checkpoint.load(tmp_path / name / "seed_0")["rows"]) == 2

    doc = run_strategy(scenario, specs[name], tokens, str(tmp_path), resume={"reason": "resume"})
    assert comparable(doc) == comparable(reference(name))
    assert doc["complete"] and doc["resumes"] == [{"reason": "resume", "from_experience": 2}]
    assert doc["restarts"] == 0
    assert json.loads((tmp_path / name / "seed_0" / "metrics.json").read_text())["resumes"] == doc["resumes"]


@pytest.mark.parametrize("name, experience", [("replay", 1), ("ewc", 1), ("periodic_refinetune", 1)])
def test_resume_after_crash_mid_training(name, experience, setup, reference, tmp_path):
    """Killed halfway through training an experience (periodic re-fine-tune trains only at its
    refits, period 2: after experience 1): the last checkpoint is the experience before; the
    resumed run redoes it and on."""

    scenario, specs, tokens = setup
    with pytest.raises(Crash):
        run_strategy(scenario, specs[name], tokens, str(tmp_path),
                     progress=crash_at("train", experience, after_batches=2))
    doc = run_strategy(scenario, specs[name], tokens, str(tmp_path), resume={"reason": "resume"})
    assert comparable(doc) == comparable(reference(name))
    assert doc["resumes"][0]["from_experience"] == experience


def test_resume_without_checkpoint_starts_over(setup, reference, tmp_path):

    scenario, specs, tokens = setup
    with pytest.raises(Crash):
        run_strategy(scenario, specs["naive"], tokens, str(tmp_path), progress=crash_at("train", 0, after_batches=1))
    doc = run_strategy(scenario, specs["naive"], tokens, str(tmp_path), resume={"reason": "resume"})
    assert comparable(doc) == comparable(reference("naive"))
    assert doc["resumes"] == [{"reason": "resume", "from_experience": 0}]


def test_lost_plugin_state_would_show(setup, reference, tmp_path):
    """Control: resuming replay with its buffer emptied gives different numbers, so the equality
    above is evidence that the buffer was restored, not an accident of a coarse metric."""
    from clsim import checkpoint

    scenario, specs, tokens = setup
    with pytest.raises(Crash):
        run_strategy(scenario, specs["replay"], tokens, str(tmp_path), progress=crash_at("done_exp", 1))
    state = checkpoint.load(tmp_path / "replay" / "seed_0")
    replay = next(p for p in state["trainer"]["strategy"]["plugins"] if p["class"] == "BalancedReplayPlugin")
    replay["state"]["groups"] = []
    checkpoint.save(tmp_path / "replay" / "seed_0", {k: v for k, v in state.items() if k != "format"})
    doc = run_strategy(scenario, specs["replay"], tokens, str(tmp_path), resume={"reason": "resume"})
    assert doc["costs"]["samples_trained"] < reference("replay")["costs"]["samples_trained"]
    assert comparable(doc) != comparable(reference("replay"))


def test_finished_run_keeps_its_result_not_its_learner_state(setup, tmp_path):
    """After the last experience the checkpoint shrinks to the result; resuming then redoes nothing."""
    from clsim import checkpoint

    scenario, specs, tokens = setup
    doc = run_strategy(scenario, specs["naive"], tokens, str(tmp_path))
    state = checkpoint.load(tmp_path / "naive" / "seed_0")
    assert state["finished"] and "trainer" not in state
    assert (tmp_path / "naive" / "seed_0" / "checkpoint.pt").stat().st_size < 100_000
    events = sorted((tmp_path / "naive" / "seed_0").glob("events.out.tfevents.*"))
    again = run_strategy(scenario, specs["naive"], tokens, str(tmp_path), resume={"reason": "actor_restart"})
    assert comparable(again) == comparable(doc) and again["resumes"] == []
    assert sorted((tmp_path / "naive" / "seed_0").glob("events.out.tfevents.*")) == events  # no new TensorBoard session


def test_resume_refuses_a_checkpoint_of_another_scenario(setup, tmp_path):
    from clsim.checkpoint import CheckpointError


    scenario, specs, tokens = setup
    with pytest.raises(Crash):
        run_strategy(scenario, specs["naive"], tokens, str(tmp_path), progress=crash_at("done_exp", 0))
    changed = scenario.model_copy(update={"train": scenario.train.model_copy(update={"lr": 0.5})})
    with pytest.raises(CheckpointError, match="different scenario"):
        run_strategy(changed, specs["naive"], tokens, str(tmp_path), resume={"reason": "resume"})


# --------------------------------------------------------------------------- checkpoint contents
def test_checkpoint_is_explicit_state_loadable_weights_only(setup, tmp_path):
    """Replay buffer as sample ids of the right experiences, EWC importances, the periodic
    position, the Avalanche clock, RNG states — all readable with weights_only=True."""

    scenario, specs, tokens = setup
    n0, n1 = (len(s.ids) for s in tokens.train[:2])
    for name in ("replay", "ewc", "periodic_refinetune"):
        with pytest.raises(Crash):
            run_strategy(scenario, specs[name], tokens, str(tmp_path), progress=crash_at("done_exp", 1))
        state = torch.load(tmp_path / name / "seed_0" / "checkpoint.pt", weights_only=True)
        learner = state["trainer"]
        plugins = {p["class"]: p["state"] for p in learner["strategy"]["plugins"]}
        assert plugins["Clock"]["train_exp_counter"] == 2
        assert len(plugins["ProbePlugin"]["loss"]) == 2
        assert set(learner["rng"]) >= {"python", "numpy", "torch"}
        assert learner["optimizer"]["state"], "Adam moments are saved"
        if name == "replay":
            groups = plugins["BalancedReplayPlugin"]["groups"]
            assert [g["key"] for g in groups] == [0, 1]
            assert all(0 <= i < n0 for i in groups[0]["ids"].tolist())
            assert all(n0 <= i < n0 + n1 for i in groups[1]["ids"].tolist())
            mem = specs[name].plugin("BalancedReplayPlugin").params["mem_size"]
            assert sum(len(g["ids"]) for g in groups) == min(mem, n0 + n1)
        if name == "ewc":
            imp = plugins["EWCPlugin"]["importances"]
            assert sorted(imp) == [0, 1]
            assert any(float(t.abs().sum()) > 0 for t in imp[1].values())
        if name == "periodic_refinetune":
            p = plugins["PeriodicRefinetunePlugin"]
            assert p["refits"] == [1]  # period 2: served unchanged at 0, refit at the window's end
            assert [h.tolist() for h in p["history"]] == [list(range(n0)), list(range(n0, n0 + n1))]


@pytest.mark.parametrize("model, train", [
    ({"finetune": "head"}, {}),  # cached backbone features: the strategy trains the head alone
    ({"finetune": "lora"}, {}),
    ({"finetune": "partial", "freeze_layers": 1}, {"precision": "bf16"}),
], ids=["head", "lora", "partial-bf16"])
def test_learner_state_round_trip_in_every_finetune_mode(model, train, tokens_for):
    """Learner.state_dict -> bytes -> torch.load(weights_only) -> a fresh learner: it trains on to
    bit-identical weights."""
    import io

    from clsim.config import Scenario
    from clsim.learner import Learner

    data = scenario_dict(strategies=["replay"])
    data["model"].update(model)
    data["train"].update(train)
    scenario = Scenario.model_validate(data)
    spec, tokens = resolve(scenario.strategies[0], train=scenario.train), tokens_for(scenario)
    straight = Learner(scenario, spec, tokens)
    for i in range(3):
        straight.train_experience(i)
    first = Learner(scenario, spec, tokens)
    for i in range(2):
        first.train_experience(i)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = Learner(scenario, spec, tokens)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    resumed.train_experience(2)
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert not all(torch.equal(want[k], v) for k, v in first.model.state_dict().items())  # it did train on


@pytest.mark.parametrize("ref", [{"preset": "replay", "storage": "class", "mem_size": 30}, "independent",
                                 {"preset": "periodic_refinetune", "period": 1, "window": 2, "start": "current"}],
                         ids=["replay-class", "independent", "periodic-current"])
def test_strategy_state_round_trip(ref, tokens_for):
    """The new plugins' state through Learner.state_dict -> bytes -> weights_only load -> a fresh
    learner: class-balanced replay's per-class reservoirs, from-scratch's initial weights, the
    periodic window. It trains on to bit-identical weights (and buffers)."""
    import io

    from clsim.config import Scenario
    from clsim.learner import Learner

    scenario = Scenario.model_validate(scenario_dict(strategies=[ref]))
    spec, tokens = resolve(scenario.strategies[0], train=scenario.train), tokens_for(scenario)
    straight = Learner(scenario, spec, tokens)
    for i in range(3):
        straight.train_experience(i)
    first = Learner(scenario, spec, tokens)
    for i in range(2):
        first.train_experience(i)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = Learner(scenario, spec, tokens)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    resumed.train_experience(2)
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    states = [{p["class"]: p["state"] for p in ln.state_dict()["strategy"]["plugins"] if p["class"] != "ProbePlugin"}
              for ln in (straight, resumed)]
    assert _same(*states), "every plugin's state (buffers as sample ids, weights) equals the uninterrupted run's"


def test_a_checkpoint_without_a_stateless_plugin_still_restores(tokens_for):
    """A checkpoint taken before a stateless plugin existed (EWC's from before FrozenAnchorsPlugin,
    whose anchors hold every parameter) restores into today's strategy and trains on to the same
    weights; a plugin that has state still has to match (control: replay's state into EWC)."""
    from clsim.config import Scenario
    from clsim.learner import Learner
    from clsim.strategies.state import StateError

    sc = Scenario.model_validate(scenario_dict(
        model={"pretrained": "tiny", "finetune": "partial", "freeze_layers": 1, "max_length": 32}, strategies=["ewc"]))
    spec, tokens = resolve(sc.strategies[0], train=sc.train), tokens_for(sc)
    straight = Learner(sc, spec, tokens)
    for i in range(3):
        straight.train_experience(i)
    old = Learner(sc, spec, tokens)
    old.strategy.plugins = [p for p in old.strategy.plugins if type(p).__name__ != "FrozenAnchorsPlugin"]
    for i in range(2):
        old.train_experience(i)
    state = old.state_dict()
    assert "FrozenAnchorsPlugin" not in [p["class"] for p in state["strategy"]["plugins"]]
    resumed = Learner(sc, spec, tokens)
    resumed.load_state_dict(state)
    resumed.train_experience(2)
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    replay = Scenario.model_validate(scenario_dict(strategies=["replay"]))
    other = Learner(replay, resolve(replay.strategies[0], train=replay.train), tokens_for(replay))
    with pytest.raises(StateError, match="ReplayPlugin|BalancedReplayPlugin"):
        Learner(sc, spec, tokens).load_state_dict(other.state_dict())


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_checkpoint_write_crash_leaves_previous_checkpoint(setup, reference, tmp_path, monkeypatch):
    """A crash while writing checkpoint 1 (after its TensorBoard events and metrics were written):
    checkpoint 0 survives intact, no temp file is left, and the resumed run shows each experience
    once in TensorBoard and ends with the uninterrupted metrics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from clsim import checkpoint

    scenario, specs, tokens = setup
    real_save, calls = torch.save, []

    def dying_save(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"half a checkpoint")
            raise Crash("killed mid-write")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    with pytest.raises(Crash):
        run_strategy(scenario, specs["ewc"], tokens, str(tmp_path))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    out = tmp_path / "ewc" / "seed_0"
    assert len(checkpoint.load(out)["rows"]) == 1
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    assert len(json.loads((out / "metrics.json").read_text())["accuracy_matrix"]) == 2  # one ahead

    doc = run_strategy(scenario, specs["ewc"], tokens, str(tmp_path), resume={"reason": "resume"})
    assert comparable(doc) == comparable(reference("ewc"))
    ea = EventAccumulator(str(out))
    ea.Reload()
    for name in tokens.names:
        assert [e.step for e in ea.Scalars(f"accuracy/{name}")] == [0, 1, 2]
    assert [e.value for e in ea.Scalars(f"accuracy/{tokens.names[0]}")] == pytest.approx(
        [row[0] for row in doc["accuracy_matrix"]])


def test_results_write_crash_leaves_previous_file(tmp_path, monkeypatch):
    from clsim import sinks

    path = tmp_path / "metrics.json"
    sinks.write_json(path, {"rows": 1})

    def dying_fsync(fd):
        raise Crash("killed before the rename")

    monkeypatch.setattr(sinks.os, "fsync", dying_fsync)
    with pytest.raises(Crash):
        sinks.write_json(path, {"rows": 2, "big": list(range(10000))})
    assert json.loads(path.read_text()) == {"rows": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


# --------------------------------------------------------------------------- Ray actor restarts
@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for this module's actor tests; execute() joins an initialised Ray."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", configure_logging=False)
    yield
    ray.shutdown()


def _kill_when(run_dir: Path, victim: str, T: int, events: list):
    """Progress callback: once ``victim`` reports its first finished experience, freeze its actor,
    check it is mid-run, and kill its process (SIGKILL: no cleanup, like the OOM killer)."""
    import ray

    from clsim.runner import actor_name

    state = {"killed_pid": None}

    def progress(run, phase, i, done, total):
        events.append((run, phase, i, done, total))
        if run == victim and phase == "done_exp" and state["killed_pid"] is None:
            pid = ray.get(ray.get_actor(actor_name(run_dir, victim)).pid.remote())
            os.kill(pid, signal.SIGSTOP)
            rows = len(json.loads((run_dir / victim / "seed_0" / "metrics.json").read_text())["accuracy_matrix"])
            assert rows < T, "the actor finished before the test could kill it"
            os.kill(pid, signal.SIGKILL)
            state["killed_pid"] = pid

    return progress, state


def test_killed_ray_actor_restarts_and_resumes(tmp_path, ray_local):
    """Two strategies as Ray actors; replay's process is killed mid-run. Ray restarts it, it resumes
    from its checkpoint, finishes with the uninterrupted metrics, and the restart is logged;
    naive is unaffected."""
    from clsim.config import Scenario
    from clsim.data import build_stream
    from clsim.execution import execute
    from clsim.models import tokenize_stream

    data = scenario_dict(strategies=["naive", "replay"])
    data["stream"]["experiences"] = ["food", "tech", "travel", "movies", "sports"]
    data["resources"] = {"cpus_per_run": 1}
    scenario = Scenario.model_validate(data)
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(data))
    p = plan_of(scenario, file)
    tokens = tokenize_stream(build_stream(scenario.stream, scenario.seed), scenario.model)
    run_dir = tmp_path / "out" / scenario.name / "run"
    run_dir.mkdir(parents=True)
    events: list = []
    progress, state = _kill_when(run_dir, "replay", len(tokens), events)

    over_seeds = execute(p, {scenario.seed: tokens}, run_dir, "cpu", progress=progress)
    assert all(d["complete"] for d in over_seeds)
    docs = {d["strategy"]: json.loads((run_dir / d["strategy"] / "seed_0" / "metrics.json").read_text())
            for d in over_seeds}

    assert state["killed_pid"] is not None
    assert ("replay", "restart", -1, 1, 2) in events
    replay, naive = docs["replay"], docs["naive"]
    assert replay["complete"], replay.get("error")
    assert replay["restarts"] == 1
    (resumed,) = replay["resumes"]
    assert resumed["reason"] == "actor_restart" and resumed["from_experience"] >= 1
    assert "Actor" in resumed["error"] or "died" in resumed["error"].lower()
    assert naive["complete"] and naive["restarts"] == 0 and naive["resumes"] == []
    on_disk = json.loads((run_dir / "replay" / "seed_0" / "metrics.json").read_text())
    assert on_disk["restarts"] == 1
    assert "Incomplete" not in (run_dir / "summary.md").read_text()
    for spec in p.strategies:  # both equal an uninterrupted in-process run
        ref = run_strategy(scenario, spec, tokens, str(tmp_path / "ref"))
        assert comparable(docs[spec.name]) == comparable(ref), spec.name


# --------------------------------------------------------------------------- the CLI
@pytest.mark.slow  # a second Python + Ray start-up: ~35 s on 2 idle cores
def test_cli_run_killed_then_resumed(tmp_path, setup, reference, ray_local):
    """`clsim run` killed (SIGKILL) after its first checkpoint: summary.md says incomplete;
    `clsim run --resume RUN_DIR` finishes it with the metrics of an uninterrupted run."""
    import psutil
    from typer.testing import CliRunner

    from clsim.cli import app

    scenario, specs, tokens = setup
    data = scenario_dict(strategies=["replay"])
    file = tmp_path / "unit.yaml"
    file.write_text(yaml.safe_dump(data))
    run_dir = tmp_path / "out" / "unit" / "r1"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "-m", "clsim.cli", "run", str(file), "--output", str(tmp_path / "out"),
                             "--run-id", "r1", "--device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    started = []
    try:
        deadline = time.monotonic() + 240
        ckpt = run_dir / "replay" / "seed_0" / "checkpoint.pt"
        while not ckpt.exists():
            assert proc.poll() is None, "clsim run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.05)
        # the whole tree at once (driver, Ray's processes, the actor), as a power cut or the OOM killer would
        started = psutil.Process(proc.pid).children(recursive=True)
        for victim in [proc, *started]:
            try:
                victim.send_signal(signal.SIGKILL)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        psutil.wait_procs(started, timeout=20)
    metrics = json.loads((run_dir / "replay" / "seed_0" / "metrics.json").read_text())
    assert not metrics["complete"]
    assert "Incomplete strategies (partial or missing results): replay" in (run_dir / "summary.md").read_text()

    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    doc = json.loads((run_dir / "replay" / "seed_0" / "metrics.json").read_text())
    assert comparable(doc) == comparable(reference("replay"))
    assert doc["resumes"][0]["reason"] == "resume"
    assert "Incomplete" not in (run_dir / "summary.md").read_text()

    again = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--device", "cpu"])
    assert again.exit_code == 0, again.output  # nothing left to do: finished strategies are kept
    assert json.loads((run_dir / "replay" / "seed_0" / "metrics.json").read_text()) == doc


@pytest.mark.slow  # a second Python + Ray start-up
def test_cli_run_terminated_stops_cleanly(tmp_path):
    """SIGTERM (kill, a batch system's limit) stops `clsim run` as Ctrl-C does: exit 143, the resume
    command printed, summary.md naming the unfinished strategy, and no Ray process left behind."""
    import psutil

    file = tmp_path / "unit.yaml"
    # long enough after the first checkpoint that the run cannot finish while the signal is handled
    # (with one epoch per experience a fast machine finished the last two during shutdown)
    file.write_text(yaml.safe_dump(scenario_dict(strategies=["replay"],
                                                 train={"epochs": 10, "batch_size": 16, "lr": 1.0e-3})))
    run_dir = tmp_path / "out" / "unit" / "r1"
    proc = subprocess.Popen([sys.executable, "-m", "clsim.cli", "run", str(file), "--output", str(tmp_path / "out"),
                             "--run-id", "r1", "--device", "cpu"], env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    children = []
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "replay" / "seed_0" / "checkpoint.pt").exists():
            assert proc.poll() is None, "clsim run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 143, err[-2000:]
    assert f"continue with `clsim run --resume {run_dir}`" in " ".join(err.split())
    assert "Incomplete strategies (partial or missing results): replay" in (run_dir / "summary.md").read_text()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.name() for p in alive]}"
