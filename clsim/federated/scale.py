"""How a simulated federation scales with its total number of clients (``clsim bench``'s
``flower_scale``).

One FedAvg run per federation size in Flower's simulation on Ray, each sampling the same number
of clients per round, every client holding the same number of training examples (the synthetic
stream grows with the federation), so every round trains the same amount whatever the total.
Per size:

- ``round_wall``: the train phase's wall time (messages out to the last reply in, as the server
  sees it), mean over the steady rounds (round 1, which pays for the workers' start-up — imports,
  tokenising, partitioning, the pretrained model — is left out);
- ``overhead``: the share of that wall time not spent training: ``1 − (Σ clients' training
  seconds / workers) / round_wall``, where ``workers`` is how many clients run at once (Flower
  starts one Ray actor per ``num_cpus`` of the machine). Whatever is not training — Flower's
  messaging, Ray, a client's set-up, a worker idle at the end of a round — counts against it;
- ``setup``: the clients' own set-up around training (learner, state, arrays), summed per round;
- ``peak_gb``: peak memory of this process and every process below it (Ray's and the workers):
  the sum of proportional set sizes (PSS: a page shared by several processes counted once, split
  between them) and of resident set sizes (RSS: shared pages counted in every process; an upper
  bound), sampled by :class:`PeakMemory`;
- CPU seconds per round, of the server process (where Flower's message pump runs) and of all
  processes: what a round costs the machine, whatever else runs on it (the memory sampler's own
  CPU left out).
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass

import psutil

from clsim.config import Scenario, resolve_scenario
from clsim.federated.job import federated_job
from clsim.federated.launch import run_simulation_job
from clsim.federated.schema import FEDERATED


class PeakMemory:
    """Peak PSS and RSS of this process and its descendants, sampled in a thread: RSS every ``every``
    s (cheap), PSS — which costs the kernel tens of ms per large process — whenever the RSS sum
    passes its peak by more than ``margin``, and at least every ``pss_every`` s. ``cpu``: the CPU
    seconds the sampling thread used, so that the server's CPU can be reported without the instrument."""

    def __init__(self, every: float = 0.5, pss_every: float = 10.0, margin: float = 0.01):
        self.every, self.pss_every, self.margin, self.pss, self.rss = every, pss_every, margin, 0, 0
        self.cpu = 0.0
        self.at_peak: list[tuple[float, str]] = []  # (GB PSS, process) when the PSS sum peaked
        self._last_pss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
        rss = 0
        for p in procs:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        now = time.monotonic()
        if rss <= self.rss * (1 + self.margin) and now - self._last_pss < self.pss_every:
            return
        self.rss, self._last_pss = max(self.rss, rss), now
        pss, each = 0, []
        for p in procs:
            try:
                info, name = p.memory_full_info(), _name(p)
            except psutil.Error:
                continue
            pss += getattr(info, "pss", info.rss)
            each.append((getattr(info, "pss", info.rss) / 1e9, name))
        if pss > self.pss:
            self.pss, self.at_peak = pss, sorted(each, reverse=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            t = time.thread_time()
            self._sample()
            self.cpu += time.thread_time() - t

    def __enter__(self) -> "PeakMemory":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _name(p: psutil.Process) -> str:
    """``this process``, ``ray::ClientAppActor``, ``raylet``…: what a process is, briefly."""
    if p.pid == os.getpid():
        return "this process (server)"
    args = p.cmdline()
    if args and args[0].startswith("ray::"):
        return args[0].split()[0]
    return os.path.basename(args[0]) if args else p.name()


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process, and by it with every process below it."""
    me = psutil.Process()
    own = sum(me.cpu_times()[:2])
    total = own
    for p in me.children(recursive=True):
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    return own, total


@dataclass
class ScaleRow:
    clients: int
    sampled: int
    workers: int
    rounds: list[int]  # the steady rounds (round 1 pays for start-up)
    round_wall: float  # train-phase wall time of the fastest steady round, seconds
    train: float  # Σ clients' training seconds in that round
    setup: float  # Σ clients' set-up seconds in that round
    mean_wall: float  # mean train-phase wall time over the steady rounds
    server_cpu: float  # CPU seconds of the server process per round (Flower's message pump runs there)
    total_cpu: float  # CPU seconds of every process per round (server, Ray, workers)
    peak_pss_gb: float
    peak_rss_gb: float
    at_peak: list[tuple[float, str]]  # (GB PSS, process) when memory peaked
    first_round_wall: float
    seconds: float  # the whole simulation, start-up and clients joining included

    @property
    def overhead(self) -> float:
        return 1.0 - (self.train / self.workers) / self.round_wall if self.round_wall else float("nan")


def scale_scenario(clients: int, sampled: int, per_client: int, model: dict, train: dict, test: int,
                   rounds_per_experience: int, num_cpus: float) -> Scenario:
    """FedAvg over ``clients`` clients, ``sampled`` a round, ``per_client`` training examples each."""
    return Scenario.model_validate({
        "name": f"scale_{clients}", "seed": 0,
        "stream": {"source": "synthetic", "experiences": ["food", "tech"],
                   "train_per_experience": per_client * clients, "test_per_experience": test},
        "model": model, "train": train,
        "strategies": [{"preset": "fedavg", "clients": clients, "rounds_per_experience": rounds_per_experience,
                        "partition": {"kind": "iid"}, "client_resources": {"num_cpus": num_cpus},
                        "server_params": {"fraction_train": sampled / clients, "fraction_evaluate": 0.0,
                                          "min_train_nodes": sampled}}]})


def measure_size(sc: Scenario, tokens, sampled: int, num_cpus: float) -> ScaleRow:
    """One simulated run of ``sc``: its steady rounds' timings, CPU per round and peak memory.

    CPU per round is read at the end of every round (the server's progress report) and counted
    for rounds that do not open an experience (those also hold the evaluation of R and a
    checkpoint): a load-independent measure of what a round costs the machine."""
    job = federated_job(resolve_scenario(sc, extensions=(FEDERATED,)))
    fed = job.fed
    workers = max(1, min(sampled, int((os.cpu_count() or 1) / num_cpus)))
    marks: list[tuple[float, float]] = []  # (server CPU, total CPU) after each round

    def progress(run: str, phase: str, *_) -> None:
        if phase == "train":
            own, total = _cpu_seconds()
            marks.append((own - peak.cpu, total - peak.cpu))  # without the memory sampler's own CPU

    t0 = time.perf_counter()
    with PeakMemory() as peak, tempfile.TemporaryDirectory() as out:
        doc = run_simulation_job(job, out, tokens, progress=progress)
    seconds = time.perf_counter() - t0
    log = [r for r in doc.get("round_log", []) if r.get("train_wall_seconds")]
    if not log:
        raise RuntimeError(f"the {fed.clients}-client federation recorded no round timings")
    steady = log[1:] or log
    best = min(steady, key=lambda r: r["train_wall_seconds"])
    inner = [k for k in range(1, len(marks)) if (k % fed.rounds_per_experience) != 0]  # round k+1 opens no experience
    cpu = [(marks[k][0] - marks[k - 1][0], marks[k][1] - marks[k - 1][1]) for k in inner] or [(float("nan"),) * 2]
    return ScaleRow(fed.clients, sampled, workers, [r["round"] for r in steady], best["train_wall_seconds"],
                    best["train_seconds"], best["client_setup_seconds"],
                    sum(r["train_wall_seconds"] for r in steady) / len(steady),
                    sum(c[0] for c in cpu) / len(cpu), sum(c[1] for c in cpu) / len(cpu),
                    peak.pss / 1e9, peak.rss / 1e9, peak.at_peak[:6], log[0]["train_wall_seconds"], seconds)
