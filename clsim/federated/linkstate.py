"""A workaround for Flower 1.42's simulation engine with many clients: idle nodes are not scanned.

The simulation's message pump (``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue``)
asks the in-memory link state every 0.1 s, for each virtual SuperNode in turn, whether a message
waits for it; each ask (``InMemoryLinkState.get_message_ins``) walks every stored message and
re-validates it under the state's lock. That costs nodes × messages checks per tick: with 1,000
clients and a round's 10 messages in flight it keeps one of two cores busy in the server process,
and the sampled clients train on what is left — round time grew with *total* clients (measured:
4.6 s a round with 100 clients, 18.5 s with 1,000, the same 10 clients sampled). Flower's
maintainers call the polling a temporary solution (flwrlabs/flower#3369).

:func:`skip_idle_nodes` keeps, per link state, the set of nodes that have an undelivered message,
rebuilt only after the store changed (a message stored, or one delivered by Flower's own method):
the ask for a node outside that set returns at once (one set lookup), and every other ask goes to
Flower's method unchanged — so what is delivered, in which order, and how messages are validated
and expired stay Flower's. Stale sets cannot hide a message: a version number is read before the
set is built and bumped after every store, so a set built from an older store is never used. It is
applied in clsim's simulation process only (``clsim.federated.launch``); a real SuperLink is a
process of its own, untouched.
"""
from __future__ import annotations

import functools
import itertools

from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

_MARK = "_clsim_skips_idle_nodes"
_VERSION, _PENDING = "_clsim_store_version", "_clsim_pending_nodes"
_versions = itertools.count(1)  # next() is atomic in CPython: safe across the pump and server threads


def skip_idle_nodes() -> bool:
    """Patch ``InMemoryLinkState`` (once per process); False if Flower no longer has the methods."""
    get_original = getattr(InMemoryLinkState, "get_message_ins", None)
    store_original = getattr(InMemoryLinkState, "store_message_ins", None)
    if get_original is None or store_original is None:
        return False
    if getattr(get_original, _MARK, False):
        return True

    @functools.wraps(store_original)
    def store_message_ins(self, message):
        try:
            return store_original(self, message)
        finally:
            setattr(self, _VERSION, next(_versions))  # after the store: a set built before it is stale

    @functools.wraps(get_original)
    def get_message_ins(self, node_id, limit, *, run_id=None):
        version = getattr(self, _VERSION, 0)
        built = getattr(self, _PENDING, None)
        if built is None or built[0] != version:
            pending = list(self.message_ins_store.values())  # a snapshot: other threads store and delete
            built = (version, {m.metadata.dst_node_id for m in pending if m.metadata.delivered_at == ""})
            setattr(self, _PENDING, built)
        if node_id not in built[1]:
            return []
        try:
            return get_original(self, node_id, limit, run_id=run_id)
        finally:
            setattr(self, _VERSION, next(_versions))  # it may have marked messages delivered

    for fn in (get_message_ins, store_message_ins):
        setattr(fn, _MARK, True)
    InMemoryLinkState.get_message_ins = get_message_ins
    InMemoryLinkState.store_message_ins = store_message_ins
    return True
