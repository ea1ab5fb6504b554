"""The bench's Flower measures: the overhead of a 4-client round, and how a simulated federation
scales with its total number of clients (``clsim.federated.scale``)."""
from __future__ import annotations

import os
import tempfile

from clsim.bench.core import BenchConfig, Result
from clsim.config import StrategyRef, resolve_scenario
from clsim.data import build_stream
from clsim.federated.job import federated_job
from clsim.federated.launch import run_simulation_job
from clsim.federated.scale import ScaleRow, measure_size, scale_scenario
from clsim.federated.schema import FEDERATED
from clsim.models import tokenize_stream


def measure_flower(cfg: BenchConfig, tokens, say) -> Result:
    """FedAvg over ``cfg.clients`` simulated clients (2 in tiny mode) in Flower's simulation on Ray, all at once.

    Per round, the train phase's wall time (messages out to the last reply in, as the server
    sees it) against the slowest client's own training time; the first round, which pays for
    process start-up (imports, model load), is left out when there are later ones."""
    cpus = os.cpu_count() or 1
    rpe, clients = (1, 2) if cfg.tiny else (2, cfg.clients)  # tiny: the plumbing only, fewer actors to start
    fedavg = {
        "preset": "fedavg", "clients": clients, "rounds_per_experience": rpe, "partition": {"kind": "iid"},
        "client_resources": {"num_cpus": cpus / clients},  # every client at once: the round waits for the slowest
        "server_params": {"fraction_train": 1.0, "fraction_evaluate": 0.0}}
    sc = cfg.scenario().model_copy(update={"strategies": [StrategyRef.model_validate(fedavg)]})
    say(f"Flower simulation: FedAvg, {clients} clients on {cpus} CPUs, {rpe * len(tokens)} rounds")
    with tempfile.TemporaryDirectory() as out:
        doc = run_simulation_job(federated_job(resolve_scenario(sc, extensions=(FEDERATED,))), out, tokens)
    rounds = [r for r in doc.get("round_log", []) if r.get("train_wall_seconds")]
    if not rounds:
        return Result("flower_overhead", None, "missing: the federated run recorded no round timings")
    steady = rounds[1:] or rounds
    wall = sum(r["train_wall_seconds"] for r in steady)
    slowest = sum(r["slowest_client_train_seconds"] for r in steady)
    first = rounds[0]
    first_overhead = 1 - first["slowest_client_train_seconds"] / first["train_wall_seconds"]
    return Result("flower_overhead", (wall - slowest) / wall,
                  f"{_span([r['round'] for r in steady])}: wall {wall / len(steady):.1f} s, slowest client "
                  f"{slowest / len(steady):.1f} s per round; round 1 (start-up) {first_overhead:.0%}")


def _span(rounds: list[int]) -> str:
    return f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]}–{rounds[-1]}"


def measure_flower_scale(cfg: BenchConfig, say, rows: list[ScaleRow]) -> list[Result]:
    """FedAvg with LoRA over ``cfg.scale_clients`` simulated clients, ``cfg.scale_sampled`` a round,
    each with ``cfg.scale_per_client`` examples (``clsim.federated.scale``); ``rows`` gets the table.
    The ratios compare the second-largest size with the largest (100 and 1,000 by default)."""
    cpus = os.cpu_count() or 1
    sampled = 2 if cfg.tiny else cfg.scale_sampled
    model = ({"pretrained": "tiny", "finetune": "lora", "max_length": 32} if cfg.tiny
             else {"pretrained": "minilm", "finetune": "lora", "max_length": 64})
    sizes = (4, 16) if cfg.tiny else cfg.scale_clients  # tiny: the plumbing; two sizes make the ratios
    for n in sizes:
        sc = scale_scenario(n, sampled, 8 if cfg.tiny else cfg.scale_per_client, model,
                            {"epochs": 1, "batch_size": 16, "lr": 5e-4, "lp_epochs": 0}, 16 if cfg.tiny else 100,
                            2 if cfg.tiny else 3, 1.0)
        say(f"Flower simulation: FedAvg + LoRA, {n} clients, {sampled} sampled a round, on {cpus} CPUs")
        tokens = tokenize_stream(build_stream(sc.stream, sc.seed), sc.model)
        rows.append(measure_size(sc, tokens, sampled, 1.0))
        r = rows[-1]
        say(f"  {n} clients: round wall {r.round_wall:.2f} s (clients train {r.train:.2f} s on {r.workers} workers, "
            f"set-up {r.setup:.2f} s), overhead {r.overhead:.0%}; CPU per round {r.total_cpu:.1f} s, server "
            f"{r.server_cpu:.1f} s; peak {r.peak_pss_gb:.2f} GB PSS / {r.peak_rss_gb:.2f} GB RSS; "
            f"whole run {r.seconds:.0f} s")
    by = {r.clients: r for r in rows}
    mid, big = sizes[-2], sizes[-1]
    m, g = by[mid], by[big]
    return [
        Result("flower_scale_overhead_100", m.overhead,
               f"{mid} clients, fastest steady round: wall {m.round_wall:.2f} s, clients' training {m.train:.2f} s "
               f"over {m.workers} workers, their set-up {m.setup:.2f} s"),
        Result("flower_scale_wall_1000_vs_100", g.round_wall / m.round_wall,
               f"round wall {g.round_wall:.2f} s at {big} clients vs {m.round_wall:.2f} s at {mid} (CPU per round "
               f"{g.total_cpu:.1f} vs {m.total_cpu:.1f} s, server {g.server_cpu:.1f} vs {m.server_cpu:.1f} s)"),
        Result("flower_scale_peak_gb_1000", g.peak_pss_gb,
               f"{big} clients: PSS {g.peak_pss_gb:.2f} GB, RSS {g.peak_rss_gb:.2f} GB (shared pages counted in "
               f"every process); largest: " + ", ".join(f"{name} {gb:.2f}" for gb, name in g.at_peak[:3])),
    ]
