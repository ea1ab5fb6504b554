"""Ray: one actor per central strategy run, restarts of dead actors, start-up and signals.

The driver puts each seed's tokenised stream in Ray's object store once and starts one actor
per (strategy, seed) run. Each actor asks for a GPU (or the scenario's fraction of one) when CUDA is visible,
else CPUs, matches torch's threads to its CPUs, and runs ``clsim.lifecycle.run_strategy``,
which writes its results and a checkpoint after every experience. If an actor's process dies,
Ray restarts it and the driver re-submits the run, which resumes from that checkpoint.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from clsim.config import ConfigError, Plan, StrategyPlan
from clsim.lifecycle import ProgressFn, run_strategy
from clsim.online import run_online

RESTART_TIMEOUT_S = 300  # how long a dead actor may take to come back before its strategy is failed
DIED = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
        ray.exceptions.OutOfMemoryError)  # the process is gone (not: the run raised)


@ray.remote(max_concurrency=2)  # one thread trains, the other answers progress polls
class StrategyActor:
    """One strategy run; torch threads match the CPUs Ray gave this actor."""

    def __init__(self, threads: int):
        torch.set_num_threads(max(1, threads))
        self.events: list[tuple] = []

    def run(self, label, plan, spec, tokens, run_dir, device, resume=None):
        fn = run_online if plan.scenario.stream.protocol == "online" else run_strategy
        return fn(plan, spec, tokens, run_dir, device, lambda _, *e: self.events.append((label, *e)), resume)

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


def actor_name(run_dir: Path, label: str) -> str:
    """Ray name of a run's actor (``ray.get_actor(name)``) while it is in flight; ``label`` is the
    strategy, or ``<strategy>/seed_<k>`` when a plan has several seeds."""
    run_dir = Path(run_dir)
    return f"clsim/{run_dir.parent.name}/{run_dir.name}/{label}"


@dataclass(frozen=True)
class Run:
    """One (strategy, seed) run: the plan for that seed, the strategy, the seed's tokenised stream."""

    label: str  # progress and actor name: the strategy, or <strategy>/seed_<k>
    plan: Plan
    spec: StrategyPlan
    seed: int


# --------------------------------------------------------------------------- Ray and signals
TERMINATED: list[int] = []  # signals that stopped this run (Ray re-raises them as plain KeyboardInterrupt)


def _on_sigterm(signum, frame):
    """SIGTERM (``kill``, a batch system's time limit) stops a run as Ctrl-C does — actors killed,
    summary.md naming what is incomplete — instead of ending the driver wherever it lands."""
    TERMINATED.append(signum)
    raise KeyboardInterrupt("SIGTERM")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _times(n: int) -> str:
    return f"{n} time{'s' * (n != 1)}"


def start_ray(ray_address: str | None) -> bool:
    """Start (or join) Ray unless it runs already; route SIGTERM through :func:`_on_sigterm`
    (``ray.init`` installs handlers that would end the driver without its clean-up). True if
    this call started it."""
    if ray.is_initialized():
        return False
    if ray_address:
        try:
            ray.init(address=ray_address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            why = one_line(exc)
            if "auth" in why.lower() or "token" in why.lower():
                why += ("; this cluster uses Ray's token authentication: export RAY_AUTH_TOKEN with the "
                        "cluster's token before running clsim")
            raise ConfigError(None, "--ray-address", f"cannot join Ray at {ray_address!r}: {why}") from None
    else:
        # Ray tells every new local cluster that it enabled token authentication (its default): the
        # README's Execution section says so once, the console need not at every run
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", configure_logging=False)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    return True


# --------------------------------------------------------------------------- central runs
def execute(runs: list[Run], tokens: dict[int, object], run_dir: Path, device: str,
            progress: ProgressFn | None = None, resume: bool = False, max_restarts: int = 2,
            on_finish=None) -> tuple[dict[str, dict], dict[str, str]]:
    """Run every (strategy, seed) of ``runs`` as a Ray actor (Ray must be started; ``tokens``: the
    tokenised stream of each seed); their documents and errors by label.

    A run whose process dies is restarted by Ray (``max_restarts``) and re-submitted, so it
    resumes from its checkpoint; the restart is reported through ``progress`` (phase ``restart``)
    and recorded in metrics.json. A run that still fails is reported (``failed``) and the others
    carry on. ``on_finish(run)`` runs whenever a run ends (to rewrite the summary)."""
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    refs: dict = {}  # in-flight run -> (run, actor)
    waiting: dict[str, list] = {}  # runs whose actor Ray is restarting: label -> [run, actor, why, probe, deadline]
    if not runs:
        return results, errors
    res = runs[0].plan.scenario.resources
    opts = {"num_cpus": res.cpus_per_run, "num_gpus": res.gpus_per_run if device == "cuda" else 0,
            "max_restarts": max_restarts, "max_task_retries": 0}
    restarts = {r.label: 0 for r in runs}
    token_refs = {seed: ray.put(t) for seed, t in tokens.items()}

    def submit(run: Run, actor, why: dict | None) -> None:
        refs[actor.run.remote(run.label, run.plan, run.spec, token_refs[run.seed], str(run_dir), device,
                              why)] = (run, actor)

    def finish(name: str, actor) -> None:
        ray.kill(actor)  # an actor holds its CPUs/GPU until it dies; free them for the next run
        if progress:
            progress(name, "finished" if name in results else "failed", -1, 1, 1)
        if on_finish:
            on_finish(name)

    def died(run, actor, exc) -> None:
        name = run.label
        restarts[name] += 1
        if restarts[name] <= max_restarts:  # Ray restarts the process; resume there when it is up
            if progress:
                progress(name, "restart", -1, restarts[name], max_restarts)
            why = {"reason": "actor_restart", "attempt": restarts[name], "error": one_line(exc)}
            waiting[name] = [run, actor, why, None, time.monotonic() + RESTART_TIMEOUT_S]
            return
        errors[name] = f"actor died {_times(restarts[name])}; last: {one_line(exc)}"
        finish(name, actor)

    try:
        for run in runs:
            actor = StrategyActor.options(name=actor_name(run_dir, run.label), **opts).remote(res.cpus_per_run)
            submit(run, actor, {"reason": "resume"} if resume else None)
        while refs or waiting:
            for name, w in list(waiting.items()):  # resubmit once the restarted process answers
                run, actor, why, probe, deadline = w
                if probe is None:
                    w[3] = actor.pid.remote()
                    continue
                if not ray.wait([probe], timeout=0)[0]:
                    continue
                del waiting[name]
                try:
                    ray.get(probe)
                except ray.exceptions.ActorUnavailableError:  # still restarting: ask again
                    if time.monotonic() < deadline:
                        waiting[name] = [run, actor, why, None, deadline]
                        continue
                    errors[name] = f"actor did not come back within {RESTART_TIMEOUT_S} s after dying"
                    finish(name, actor)
                except DIED as exc:  # dead for good: Ray's max_restarts is spent
                    errors[name] = f"actor died {_times(restarts[name])}; last: {one_line(exc)}"
                    finish(name, actor)
                else:
                    submit(run, actor, why)
            if not refs:
                time.sleep(0.2)
                continue
            done, _ = ray.wait(list(refs), timeout=0.5)
            for ref in done:
                run, actor = refs.pop(ref)
                try:
                    results[run.label] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the run raised: a bug or bad input, not bad luck
                    if isinstance(exc.cause, ConfigError):
                        raise exc.cause from None
                    errors[run.label] = one_line(exc.cause or exc)
                except DIED as exc:
                    died(run, actor, exc)
                    continue
                finish(run.label, actor)
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
    finally:
        for actor in [a for _, a in refs.values()] + [w[1] for w in waiting.values()]:
            ray.kill(actor)  # interrupted (Ctrl-C, bad input): stop what still runs
    return results, errors
