"""Run a scenario: one Ray actor per strategy run, results to TensorBoard and results/.

The driver validates everything, builds and tokenises the stream once, puts it in Ray's
object store, and starts one actor per strategy. Each actor asks for a GPU (or the
scenario's fraction of one) when CUDA is visible, else CPUs, matches torch's threads to
its CPUs, trains experience by experience, and writes its own results as it goes, so a
crash loses at most the experience in flight.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from clsim import metrics as M
from clsim.config import Scenario, scenario_to_dict
from clsim.strategies import ResolvedStrategy, resolve

ProgressFn = Callable[[str, str, int, int, int], None]  # (run, phase, experience, done, total)


@dataclass
class Plan:
    """Everything a run needs, checked before any work starts."""

    scenario: Scenario
    file: Path
    specs: list[ResolvedStrategy]


# strategy parameters measured in experiences -> the most a stream of T experiences allows
STREAM_LENGTH_PARAMS = {"period": lambda T: T, "window": lambda T: T, "client_lag": lambda T: T - 1}


def stream_length(scenario: Scenario) -> int:
    """Number of experiences the scenario's stream will have."""
    stream = scenario.stream
    return stream.windows if getattr(stream, "time_column", None) else len(stream.experiences)


def plan(scenario: Scenario, file: Path, only: list[str] | None = None) -> Plan:
    from clsim.config import ConfigError

    specs = [resolve(ref, file, k) for k, ref in enumerate(scenario.strategies)]
    T = stream_length(scenario)
    for k, (ref, spec) in enumerate(zip(scenario.strategies, specs)):  # knobs counted in experiences
        lags = getattr(spec.federated, "client_lag", None) or []
        values = {**({"client_lag": lags} if lags else {}), **ref.overrides}
        for key, most in STREAM_LENGTH_PARAMS.items():
            too_long = [v for v in (values[key] if isinstance(values.get(key), list) else [values.get(key)])
                        if isinstance(v, int) and not isinstance(v, bool) and v > most(T)]
            if too_long:
                raise ConfigError(file, f"strategies[{k}].{key}", f"{too_long[0]} is longer than the stream of "
                                                                  f"{T} experiences; expected at most {most(T)}")
    if only:
        names = [s.name for s in specs]
        unknown = [o for o in only if o not in names]
        if unknown:
            raise ConfigError(None, "--strategies", f"{unknown[0]!r} is not in the scenario; expected some of {names}")
        specs = [s for s in specs if s.name in only]
    return Plan(scenario, file, specs)


def strategy_metrics(name: str, names: list[str], z: list[float], R: list[list[float]], costs: dict,
                     hparams: dict, extra: dict | None = None) -> dict:
    """The metrics.json document: every number is a function of R, z and the costs."""
    out = {"strategy": name, "experiences": names, "zero_shot": z, "accuracy_matrix": R,
           "complete": len(R) == len(names), "costs": costs, "hparams": hparams}
    if R:
        sub = [row[: len(R)] for row in R]
        out.update(M.summarize(sub, z[: len(R)]))
        out["running"] = M.running(sub, z[: len(R)])
    out.update(extra or {})
    return out


def run_strategy(scenario: Scenario, spec: ResolvedStrategy, tokens, out_dir: str, device: str = "cpu",
                 progress: ProgressFn | None = None, resume: dict | None = None) -> dict:
    """Train ``spec`` over the stream; after every experience write TensorBoard events, metrics and
    then a checkpoint (clsim.checkpoint), so a crash loses at most the experience in flight.

    ``resume`` (``{"reason": "resume" | "actor_restart", ...}``) continues from the checkpoint in
    ``<out_dir>/<name>/`` when there is one, else starts over; either way metrics.json lists it
    under ``resumes``. A resumed run ends with the same metrics as an uninterrupted one.
    """
    from clsim import checkpoint
    from clsim.learner import Learner, deterministic_mode
    from clsim.sinks import TensorBoardSink, write_strategy_results

    out = Path(out_dir) / spec.name
    names = tokens.names
    T = len(names)

    def on_batch(i, done, total):
        if progress:
            progress(spec.name, "train", i, done, total)

    deterministic_mode()
    hp = {"strategy": spec.name, **spec.hparams(), "finetune": scenario.model.finetune, "lr": scenario.train.lr,
          "epochs": scenario.train.epochs, "batch_size": scenario.train.batch_size, "precision": scenario.train.precision,
          "seed": scenario.seed}
    fingerprint = checkpoint.fingerprint(scenario_to_dict(scenario), spec.hparams(), tokens)
    state = checkpoint.load(out, fingerprint) if resume else None
    z: list[float] | None = None
    R: list[list[float]] = []
    resumes: list[dict] = []
    if state and state.get("finished"):  # e.g. the actor died after its last checkpoint: nothing to redo
        doc = json.loads(state["document"])
        write_strategy_results(out, doc)
        return doc
    learner = Learner(scenario, spec, tokens, device=device, on_batch=on_batch)
    if state:
        learner.load_state_dict(state["learner"])
        z, R, resumes = list(state["zero_shot"]), [list(r) for r in state["accuracy_matrix"]], list(state["resumes"])
    if resume:
        resumes.append({**resume, "from_experience": len(R)})

    def document() -> dict:
        p = learner.probe
        costs = {"train_seconds": float(sum(p.train_seconds)) + learner.feature_seconds,
                 "eval_seconds": float(sum(learner.eval_seconds)),
                 "samples_trained": int(sum(p.samples)), "trainable_params": learner.trainable_params,
                 "per_experience": {"train_seconds": p.train_seconds, "samples": p.samples,
                                    "loss": p.loss, "reg_ratio": p.reg_ratio}}
        restarts = sum(r.get("reason") == "actor_restart" for r in resumes)
        return strategy_metrics(spec.name, names, z, R, costs, hp, {"resumes": resumes, "restarts": restarts})

    # resuming: hide events an earlier attempt logged for experiences it did not checkpoint
    with TensorBoardSink(out, purge_step=len(R) if resume else None) as tb:
        if z is None:
            if progress:
                progress(spec.name, "eval", -1, 0, 1)
            z = learner.evaluate()
            tb.log_zero_shot(z, names)
        doc = document()
        if R:  # results may be one experience ahead of the checkpoint: bring them back in step
            write_strategy_results(out, doc)
        for i in range(len(R), T):
            learner.train_experience(i)
            row = learner.evaluate()
            R.append(row)
            doc = document()
            p = learner.probe
            tb.log_row(i, row, names, {k: v[-1] for k, v in doc["running"].items()})
            tb.log_scalar("train/loss", p.loss[-1], i)
            tb.log_scalar("train/reg_ratio", p.reg_ratio[-1], i)
            tb.log_scalar("cost/train_seconds", p.train_seconds[-1], i)
            tb.log_scalar("cost/samples", p.samples[-1], i)
            if i == T - 1:  # final entries before the last checkpoint: a finished checkpoint means all written
                tb.log_matrix(np.asarray(R), names, i)
                tb.log_hparams(hp, {f"hparam/{k}": doc[k] for k in M.NAMES}
                               | {"hparam/train_seconds": doc["costs"]["train_seconds"]}, step=i)
            tb.flush()
            write_strategy_results(out, doc)
            progress_state = {"fingerprint": fingerprint, "strategy": spec.name}
            if i < T - 1:
                checkpoint.save(out, {**progress_state, "zero_shot": z, "accuracy_matrix": R, "resumes": resumes,
                                      "learner": learner.state_dict()})
            else:  # finished: keep the result, drop the (large) learner state
                checkpoint.save(out, {**progress_state, "finished": True, "document": json.dumps(doc, default=str)})
            if progress:
                progress(spec.name, "done_exp", i, i + 1, T)
    return doc


# ----------------------------------------------------------------------------- Ray
def _actor_class():
    import ray

    @ray.remote(max_concurrency=2)  # one thread trains, the other answers progress polls
    class StrategyActor:
        """One strategy run; torch threads match the CPUs Ray gave this actor. Ray restarts the
        process if it dies (``max_restarts``); the driver then re-submits ``run`` with ``resume``."""

        def __init__(self, threads: int):
            import torch

            torch.set_num_threads(max(1, threads))
            self.events: list[tuple] = []

        def run(self, scenario, spec, tokens, out_dir, device, resume=None):
            return run_strategy(scenario, spec, tokens, out_dir, device, lambda *e: self.events.append(e), resume)

        def pid(self) -> int:
            """The worker process (for py-spy, or a test that kills it)."""
            return os.getpid()

        def progress(self) -> list[tuple]:
            """Events since the last poll, coalesced to the latest per phase."""
            events, self.events = self.events, []
            latest: dict = {}
            for e in events:
                latest[(e[1], e[2]) if e[1] == "done_exp" else e[1]] = e
            return list(latest.values())

    return StrategyActor


def actor_name(run_dir: Path, strategy: str) -> str:
    """Ray name of a strategy's actor (``ray.get_actor(name)``) while a run is in flight."""
    run_dir = Path(run_dir)
    return f"clsim/{run_dir.parent.name}/{run_dir.name}/{strategy}"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from clsim.config import ConfigError

        raise ConfigError(None, "--device", "cuda requested but no CUDA device is visible")
    return device


def new_run_dir(output: Path, scenario: Scenario, run_id: str | None = None) -> Path:
    """A fresh ``<output>/<scenario>/<run id>/``; an existing non-empty one is refused, not overwritten."""
    from clsim.config import ConfigError

    if run_id is not None and (not run_id or run_id in (".", "..") or "/" in run_id or os.sep in run_id):
        raise ConfigError(None, "--run-id", f"expected a folder name without path separators, got {run_id!r}")
    run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(output) / scenario.name / run_id
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(None, "--run-id", f"{path} already holds a run; continue it with "
                                            f"`clsim run --resume {path}` or choose another --run-id")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. --output names a file, or a read-only place
        raise ConfigError(None, "--output", f"cannot create {path}: {exc.strerror or exc}") from None
    return path


RUN_FILE = "run.json"  # what `clsim run --resume` needs besides scenario.yaml
RESTART_TIMEOUT_S = 300  # how long a dead actor may take to come back before its strategy is failed


def write_run_files(p: Plan, run_dir: Path) -> None:
    """The resolved scenario and how to resume: written once, before any training."""
    import yaml

    from clsim.sinks import atomic_write_text, write_json

    atomic_write_text(run_dir / "scenario.yaml", yaml.safe_dump(scenario_to_dict(p.scenario), sort_keys=False))
    write_json(run_dir / RUN_FILE, {"scenario_file": str(Path(p.file).resolve()),
                                    "strategies": [s.name for s in p.specs]})


def read_run(run_dir: Path) -> tuple[Scenario, Path, list[str]]:
    """What a run folder was started with: its resolved scenario, the scenario file (relative preset
    and model paths resolve against it) and the strategies it runs."""
    from pydantic import ValidationError

    from clsim.config import ConfigError, read_yaml_mapping, validation_to_error

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(None, "--resume", f"no run folder {run_dir}")
    if not (run_dir / RUN_FILE).is_file() or not (run_dir / "scenario.yaml").is_file():
        raise ConfigError(None, "--resume", f"{run_dir} is not a clsim run folder (expected scenario.yaml and "
                                            f"{RUN_FILE}, written when a run starts)")
    try:
        meta = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
        file, names = Path(meta["scenario_file"]), [str(n) for n in meta["strategies"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(run_dir / RUN_FILE, None, f"unreadable ({type(exc).__name__}: {exc})") from None
    try:
        scenario = Scenario.model_validate(read_yaml_mapping(run_dir / "scenario.yaml"))
    except ValidationError as exc:
        raise validation_to_error(run_dir / "scenario.yaml", exc) from None
    return scenario, file, names


def partial_doc(run_dir: Path, name: str, error: str | None = None) -> dict:
    """A strategy's metrics.json as far as it got (``complete`` false), or a stub if it has none."""
    try:
        doc = json.loads((Path(run_dir) / name / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = {"strategy": name, "accuracy_matrix": [], "complete": False, "costs": {}}
    if error:
        doc["error"] = error
    return doc


def finished_docs(run_dir: Path, names: list[str]) -> dict[str, dict]:
    """Strategies of a run folder whose metrics.json is complete (written after their last TensorBoard entry)."""
    out = {}
    for name in names:
        doc = partial_doc(run_dir, name)
        if doc.get("complete"):
            out[name] = doc
    return out


def _write_summary(run_dir: Path, p: Plan, results: dict[str, dict], errors: dict[str, str]) -> list[dict]:
    """summary.csv/.md over every planned strategy; unfinished ones show their partial numbers and
    are named incomplete, so a run killed at any moment never looks finished."""
    from clsim.sinks import write_summary

    docs = [results.get(s.name) or partial_doc(run_dir, s.name, errors.get(s.name)) for s in p.specs]
    write_summary(run_dir, [summary_row(d) for d in docs],
                  incomplete=[d["strategy"] for d in docs if not d.get("complete")])
    return docs


def _times(n: int) -> str:
    return f"{n} time{'s' * (n != 1)}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


TERMINATED: list[int] = []  # signals that stopped this run (Ray re-raises them as plain KeyboardInterrupt)


def _on_sigterm(signum, frame):
    """SIGTERM (``kill``, a batch system's time limit) stops a run as Ctrl-C does — actors killed,
    summary.md naming what is incomplete — instead of ending the driver wherever it lands."""
    TERMINATED.append(signum)
    raise KeyboardInterrupt("SIGTERM")


def start_ray(ray_address: str | None) -> None:
    """Start (or join) Ray for this run; then route SIGTERM through :func:`_on_sigterm` (``ray.init``
    installs handlers that would end the driver without its clean-up)."""
    import signal
    import threading

    import ray

    from clsim.config import ConfigError

    if ray_address:
        try:
            ray.init(address=ray_address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(None, "--ray-address", f"cannot join Ray at {ray_address!r}: {_one_line(exc)}") from None
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", configure_logging=False)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def execute(p: Plan, tokens, run_dir: Path, device: str = "auto", ray_address: str | None = None,
            progress: ProgressFn | None = None, resume: bool = False, max_restarts: int = 2) -> list[dict]:
    """Run every planned strategy as a Ray actor; return their metrics documents in plan order.

    Each actor checkpoints after every experience. If its process dies, Ray restarts it
    (``max_restarts``) and the driver re-submits the run, which resumes from the checkpoint; the
    restart is reported through ``progress`` (phase ``restart``) and recorded in metrics.json. A
    strategy that still fails is reported (``failed``) and the others carry on. ``resume``
    continues a run folder: finished strategies are kept, the rest resume from their checkpoints.
    summary.md names every unfinished strategy until the run completes.
    """
    import ray

    from clsim.config import ConfigError
    from clsim.sinks import write_hparams_experiment

    device = resolve_device(device)
    if not resume:
        write_run_files(p, run_dir)
    results: dict[str, dict] = finished_docs(run_dir, [s.name for s in p.specs]) if resume else {}
    errors: dict[str, str] = {}
    todo = [s for s in p.specs if s.name not in results]
    _write_summary(run_dir, p, results, errors)
    refs: dict = {}  # in-flight run -> (spec, actor)
    waiting: dict[str, list] = {}  # runs whose actor Ray is restarting: name -> [spec, actor, why, probe, deadline]
    started_here = bool(todo) and not ray.is_initialized()
    if started_here:
        start_ray(ray_address)
    try:
        res = p.scenario.resources
        use_gpu = device == "cuda"
        opts = {"num_cpus": res.cpus_per_run, "num_gpus": res.gpus_per_run if use_gpu else 0,
                "max_restarts": max_restarts, "max_task_retries": 0}
        tokens_ref = ray.put(tokens) if todo else None
        Actor = _actor_class()
        restarts = {s.name: 0 for s in todo}
        died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,  # the process is gone
                ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError)

        def submit(spec, actor, why: dict | None) -> None:
            refs[actor.run.remote(p.scenario, spec, tokens_ref, str(run_dir), device, why)] = (spec, actor)

        def finish(name: str, actor) -> None:
            ray.kill(actor)  # an actor holds its CPUs/GPU until it dies; free them for the next run
            if progress:
                progress(name, "finished" if name in results else "failed", -1, 1, 1)
            _write_summary(run_dir, p, results, errors)

        for spec in [s for s in todo if s.federated is None]:  # federated ones run after, through Flower
            actor = Actor.options(name=actor_name(run_dir, spec.name), **opts).remote(res.cpus_per_run)
            submit(spec, actor, {"reason": "resume"} if resume else None)
        while refs or waiting:
            for name, w in list(waiting.items()):  # resubmit once the restarted process answers
                spec, actor, why, probe, deadline = w
                if probe is None:
                    w[3] = actor.pid.remote()
                    continue
                if not ray.wait([probe], timeout=0)[0]:
                    continue
                try:
                    ray.get(probe)
                except ray.exceptions.ActorUnavailableError:  # still restarting: ask again
                    w[3] = None
                    if time.monotonic() < deadline:
                        continue
                    errors[name] = f"actor did not come back within {RESTART_TIMEOUT_S} s after dying"
                except died as exc:  # dead for good: Ray's max_restarts is spent
                    errors[name] = f"actor died {_times(restarts[name])}; last: {_one_line(exc)}"
                else:
                    submit(spec, actor, why)
                del waiting[name]
                if name in errors:
                    finish(name, actor)
            if not refs:
                time.sleep(0.2)
                continue
            done, _ = ray.wait(list(refs), timeout=0.5)
            for ref in done:
                spec, actor = refs.pop(ref)
                name = spec.name
                try:
                    results[name] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the run raised: a bug or bad input, not bad luck
                    if isinstance(exc.cause, ConfigError):
                        raise exc.cause from None
                    errors[name] = _one_line(exc.cause or exc)
                except died as exc:
                    restarts[name] += 1
                    if restarts[name] <= max_restarts:  # Ray restarts the process; resume there when it is up
                        if progress:
                            progress(name, "restart", -1, restarts[name], max_restarts)
                        why = {"reason": "actor_restart", "attempt": restarts[name], "error": _one_line(exc)}
                        waiting[name] = [spec, actor, why, None, time.monotonic() + RESTART_TIMEOUT_S]
                        continue
                    errors[name] = f"actor died {_times(restarts[name])}; last: {_one_line(exc)}"
                finish(name, actor)
            if progress and refs:  # actors still waiting for resources do not answer yet: never block
                polls = [actor.progress.remote() for _, actor in refs.values()]
                ready, _ = ray.wait(polls, num_returns=len(polls), timeout=0.2)
                for poll in ready:
                    try:
                        events = ray.get(poll)
                    except ray.exceptions.RayError:  # the actor died; its run reports that
                        continue
                    for event in events:
                        progress(*event)
        for spec in [s for s in todo if s.federated is not None]:
            if started_here and not ray.is_initialized():  # Flower shut down the previous simulation's Ray
                start_ray(ray_address)
            run_federated(p, spec, tokens, run_dir, device, ray_address, progress, results, errors, resume)
            _write_summary(run_dir, p, results, errors)
    finally:
        for actor in [a for _, a in refs.values()] + [w[1] for w in waiting.values()]:
            ray.kill(actor)  # interrupted (Ctrl-C, bad input): stop what still runs
        docs = _write_summary(run_dir, p, results, errors)
        if started_here:
            ray.shutdown()
    if all(d.get("complete") for d in docs):
        write_hparams_experiment(run_dir)  # one hparams table listing every strategy
    return docs


def run_federated(p: Plan, spec: ResolvedStrategy, tokens, run_dir: Path, device: str, ray_address: str | None,
                  progress: ProgressFn | None, results: dict, errors: dict, resume: bool = False) -> None:
    """A federated strategy through Flower's ``run_simulation`` on this Ray (clsim.federated.launch);
    ``resume`` continues from its last finished experience (clsim.federated.resume).

    It runs in the driver after the strategy actors, because Flower shuts Ray down when a
    simulation ends; the next one re-initialises it (joining ``ray_address`` when given)."""
    from clsim.federated.fleet import FederationError
    from clsim.federated.job import Job
    from clsim.federated.launch import run_simulation_job

    try:
        results[spec.name] = run_simulation_job(Job(p.scenario, spec.name, spec.federated, [spec]), run_dir, tokens,
                                                device, progress, ray_address=ray_address, resume=resume)
    except (FederationError, RuntimeError) as exc:  # a failed federation is reported; the others are kept
        errors[spec.name] = _one_line(exc.__cause__ or exc)
    if progress:
        progress(spec.name, "finished" if spec.name in results else "failed", -1, 1, 1)


def summary_row(doc: dict) -> dict:
    c = doc.get("costs") or {}  # a strategy that never finished an experience has none
    return {"strategy": doc["strategy"], **{k: doc.get(k, float("nan")) for k in M.NAMES},
            "train_s": c.get("train_seconds"), "eval_s": c.get("eval_seconds"), "samples": c.get("samples_trained"),
            "trainable_params": c.get("trainable_params")}


def elapsed(t0: float) -> str:
    s = time.perf_counter() - t0
    return f"{s / 60:.1f} min" if s > 90 else f"{s:.1f} s"
