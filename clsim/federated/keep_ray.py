"""Flower's simulation ends by shutting Ray down (``RayBackend.terminate``: its actors, then
``ray.shutdown()``). Inside :func:`keep_ray_up` a simulation stops only its own client actors, so
the Ray that clsim started stays up for the central strategies' actors running beside it and for
the next simulation; clsim shuts Ray down itself when the whole run ends (``clsim.execution``).
"""
from __future__ import annotations

import contextlib
import threading

from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

_lock = threading.Lock()
_depth = 0
_original = RayBackend.terminate


def _terminate_actors_only(self) -> None:
    """Flower's ``terminate`` without the ``ray.shutdown()``: the pool's actors are stopped."""
    if self.pool:
        self.pool.terminate_all_actors()


@contextlib.contextmanager
def keep_ray_up():
    """Within the block, a simulation ending leaves Ray running (nested and thread-safe)."""
    global _depth
    with _lock:
        _depth += 1
        RayBackend.terminate = _terminate_actors_only
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if not _depth:
                RayBackend.terminate = _original
