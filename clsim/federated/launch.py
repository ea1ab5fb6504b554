"""Running a federated strategy in Flower's simulation on Ray; Flower's connection config.

``run_simulation_job`` is what ``clsim run`` uses: ``flwr.simulation.run_simulation`` with the
ServerApp of :mod:`clsim.federated.server_app` and the ClientApp of
:mod:`clsim.federated.client_app`, one virtual SuperNode per client, client resources from the
preset (Flower's link state patched so that nodes without messages cost nothing:
``clsim.federated.linkstate``). Flower's Ray backend reuses the Ray clsim initialised — and shuts it down when the
simulation ends, so the runner starts federated runs after its actors are done and
re-initialises Ray between them.

``write_connection`` adds a SuperLink connection to Flower's own config (``clsim flower
connection``); starting real processes is ``clsim.federated.deploy``'s.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import tomli
import tomli_w
from flwr.simulation import run_simulation

from clsim.federated import quiet_flower
from clsim.federated.client_app import app as client_app
from clsim.federated.job import Job
from clsim.federated.linkstate import skip_idle_nodes
from clsim.federated.server_app import server_app_for


def run_simulation_job(job: Job, run_dir: str | Path, tokens, device: str = "cpu", progress=None,
                       ray_address: str | None = None, verbose: bool = False, resume: bool = False) -> dict:
    """Simulate ``job`` with Flower's simulation engine; return the metrics document.

    Resumable: the server checkpoints after every round and clients keep their CL state in
    ``<run_dir>/<strategy>/seed_<k>/clients/``; ``resume`` continues from there. If Ray is not
    initialised, Flower initialises it (joining ``ray_address`` when given)."""
    fed = job.fed
    gpus = fed.client_resources.gpus(fed.clients, device == "cuda")
    backend = {"client_resources": {"num_cpus": fed.client_resources.num_cpus, "num_gpus": gpus},
               "init_args": {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                             "configure_logging": False, **({"address": ray_address} if ray_address else {})}}
    result: dict = {}
    job = job.in_run(run_dir)
    server = server_app_for(job, run_dir, tokens, device, progress, result, resume)
    skip_idle_nodes()  # Flower's message pump would scan every stored message for every node, every 0.1 s
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
