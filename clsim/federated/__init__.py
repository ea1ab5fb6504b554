"""Federated continual learning with Flower (Message API).

The same learner as the central runs, inside a Flower ``ClientApp``; a ``ServerApp`` that runs
``flwr.serverapp.strategy.*`` unchanged and fills the global accuracy matrix. Modules:

- ``schema``: the ``federated:`` block of a strategy preset (pydantic) and the resolver's extension for it.
- ``job``: what server and clients share (the resolved plan and the strategy's name), as a ConfigRecord.
- ``partition``: each client's share of every experience (flwr-datasets partitioners).
- ``worker``: what a client process caches between messages (stream, every partition, one model).
- ``arrays``: model parameters <-> ArrayRecord (only the trainable ones travel).
- ``state``: the client's CL state (plugins, stream position) <-> its file, or ``context.state``.
- ``proximal``: the client side of FedProx, as an Avalanche plugin.
- ``fleet``: the Grid the strategy talks through (node order, timeouts, traffic accounting).
- ``server``: the federation as a lifecycle trainer: rounds per experience, round log, bytes,
  per-client matrices, a checkpoint after every round; ``server_state``: a Flower strategy's state.
- ``client_app`` / ``server_app``: the Flower apps (``pyproject.toml`` names them for ``flwr run``).
- ``launch``: simulation through ``run_simulation``; ``linkstate``: Flower's simulation pump
  made to skip idle nodes (1,000 clients); ``scale``: how a simulation scales (``clsim bench``).
- ``deploy``: ``clsim flower launch`` and ``--resume`` (checks, run folder, certificates, keys,
  the run) on ``processes`` (Flower's processes on loopback, started and stopped by PID; ``pids``:
  their PIDs on disk, for a resume after the launcher was killed).
- ``certs``: a local CA and localhost certificates for TLS; ``keys``: SuperNode auth key pairs.
"""
import contextlib
import logging
import os

# Flower reads this once at import: no telemetry calls from an offline machine.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

# Flower notices that say nothing to a clsim user: the run_simulation deprecation (clsim's Ray
# runner uses it on purpose; `flwr run` is the other path) and FedAvg's note on fraction_evaluate=0.
_NOISE = ("DEPRECATED FEATURE: The `run_simulation` function", "This is a deprecated feature",
          "Federated evaluation will be skipped")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in _NOISE)


@contextlib.contextmanager
def quiet_flower(level: int | None = None):
    """Within the block, Flower's logger drops the notices above (and logs below ``level``)."""
    logger, noise = logging.getLogger("flwr"), _DropNoise()
    saved = logger.level
    logger.addFilter(noise)
    if level is not None:
        logger.setLevel(level)
    try:
        yield logger
    finally:
        logger.removeFilter(noise)
        logger.setLevel(saved)
